"""Dense features from an adapter's roles: MaskCLIP's value path (also the fine-tuner's region features), and the
capability check that names the loader when a role is missing.

These read a similarity wrapper only through :class:`Explained` (its adapter, blocks, modality and call), so the
adapters sit below the wrappers.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from captum_gradeclip.adapters.base import Adapter, AttentionRecord, ResidualAccess, TokenProjection
from captum_gradeclip.ops import is_pool


class Explained(Protocol):
    """What these helpers read of a similarity wrapper (:class:`~captum_gradeclip.SimilarityWrapper`)."""

    adapter: Adapter
    modality: str

    def explained_blocks(self) -> list[nn.Module]: ...

    def __call__(self, *args: Any) -> Tensor: ...


def capability(sim: Explained, name: str, method: str, blocks: tuple[nn.Module, ...] = ()) -> Any:
    """The adapter method ``name`` that ``method`` needs (``probe_layer`` at every one of ``blocks``, or
    ``project_tokens``), or a clear TypeError naming the loader.

    The adapter has it where it declares the role (:class:`~captum_gradeclip.adapters.ResidualAccess`,
    :class:`~captum_gradeclip.adapters.TokenProjection`) and, for ``probe_layer``, reaches every block."""
    adapter = sim.adapter
    missing = not isinstance(adapter, _ROLE_OF[name])
    if isinstance(adapter, ResidualAccess) and name == "probe_layer":  # then _ROLE_OF[name] is ResidualAccess
        missing = any(adapter.residual_site(block) is None for block in blocks)
    if missing:
        raise TypeError(
            f"{method} needs the adapter capability `{name}`, which the {adapter.loader_name} adapter lacks"
        )
    return getattr(adapter, name)


#: The adapter role that provides each capability a method asks :func:`capability` for.
_ROLE_OF: dict[str, type] = {"probe_layer": ResidualAccess, "project_tokens": TokenProjection}


def _values(record: AttentionRecord, o: Tensor) -> Tensor:
    return o if is_pool(record) else record.tensor("v")


def value_path_tokens(similarity: Explained, inputs: Tensor, *extra: Any) -> Tensor:
    r"""MaskCLIP's dense features: every token's own value through the rest of the last block and the head.

    In the wrapper's last explained block every token attends only to itself
    (:math:`o_i = v_i`); the residual, MLP, final norm and projection then give one
    embedding per token. At an attention pool (ResNet, SigLIP's head), which has no
    residual, each token's out-projected value goes through what follows the pool
    (MaskCLIP's ResNet rule). Runs under the caller's grad mode, so it can be trained through.

    Args:
        similarity (ImageTextSimilarity): a wrapper whose adapter has ``probe_layer`` and
            ``project_tokens`` (every CLIP loader but the ViT classifier).
        inputs (Tensor): ``pixel_values (N, C, H, W)``.
        *extra: further forward arguments of the wrapper.

    Returns:
        *Tensor* ``(N, T, E)``: token 0 is CLS, then the patches in row-major order.

    Examples::

        >>> dense = value_path_tokens(ImageTextSimilarity(model, text_embeds=T), pixel_values)
    """
    adapter, block = similarity.adapter, similarity.explained_blocks()[-1]
    probe_layer = capability(similarity, "probe_layer", "value_path_tokens", (block,))
    project = capability(similarity, "project_tokens", "value_path_tokens")
    with adapter.probe(block, _values) as record, probe_layer(block) as layer:
        similarity(inputs, *extra)
    tokens = adapter.out_projection(block)(record.tensor("v")) if is_pool(record) else layer.y
    return project(tokens, similarity.modality)
