"""Loading and processing for the transformers loaders (``hf:NAME_OR_DIR``): CLIP, SigLIP, BLIP and ViT.

:class:`HFLoader` is the processing role that the transformers adapters share: ``hf:`` specs load through
``AutoModel`` and ``AutoProcessor`` (a directory or a cached name offline, the hub only when it answers), and a
checkpoint whose weights do not match the model (missing or unexpected keys) is refused unless the caller
accepts it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
from pathlib import Path

from safetensors import SafetensorError
from torch import nn

from captum_gradeclip.adapters.processing import HFProcessing, LoadError, Processing, ProcessingRole, first_line

#: What to do when the hub cannot help.
HUB_HINT = "use the spec 'shapes' (the embedded model) or a local path"


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds (False when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _checked(loaded: tuple[nn.Module, dict], spec: str, allow_missing_weights: bool) -> nn.Module:
    model, info = loaded
    problems = []
    for key, what in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "unexpected"),
        ("mismatched_keys", "of another shape"),
    ):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            problems.append(f"{len(names)} {what} ({shown})")
    if problems and not allow_missing_weights:
        raise LoadError(
            f"{spec}: the checkpoint does not match the model: weights {'; '.join(problems)}; "
            "accept it with allow_missing_weights=True (the missing weights stay randomly initialised)"
        )
    return model


def hf_pretrained(
    name: str, spec: str | None = None, *, allow_missing_weights: bool = False
) -> tuple[nn.Module, object]:
    """A transformers model and its processor from a ``from_pretrained`` name or a ``save_pretrained`` directory.

    A directory or a cached name loads offline; otherwise the hub is asked only when it answers.

    Args:
        name (str): the hub name or the directory.
        spec (str, optional): how the user named it, for the errors. Default: ``hf:NAME``.
        allow_missing_weights (bool, optional): accept a checkpoint with missing, unexpected or reshaped
            weights (missing ones stay randomly initialised). Default: False (refused).

    Returns:
        *(nn.Module, processor)*: the model in eval mode and its ``AutoProcessor``.

    Raises:
        LoadError: for a missing directory, an unreachable hub, files that do not load, or a checkpoint whose
            weights do not match the model.
    """
    from transformers import AutoModel, AutoProcessor

    spec = spec or f"hf:{name}"
    local = Path(name).expanduser()
    looks_local = local.exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name
    if looks_local and not local.is_dir():
        raise LoadError(f"{spec}: no such directory {local} (expected a save_pretrained directory)")

    def both(where: str | Path, offline: bool) -> tuple[nn.Module, object]:
        loaded = AutoModel.from_pretrained(where, output_loading_info=True, local_files_only=offline)
        model = _checked(loaded, spec, allow_missing_weights).eval()
        return model, AutoProcessor.from_pretrained(where, local_files_only=offline)

    try:
        if looks_local:
            return both(local, offline=True)
        with contextlib.suppress(OSError, ValueError):  # already in the local cache: works offline
            return both(name, offline=True)
        if not hub_reachable():
            raise LoadError(f"{spec}: the Hugging Face hub is unreachable and {name!r} is not cached; {HUB_HINT}")
        return both(name, offline=False)
    except LoadError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError, pickle.UnpicklingError) as error:
        # a truncated safetensors file, or a pickle that is not plain weights (refused, never run)
        raise LoadError(f"{spec}: cannot load ({first_line(error)}); {HUB_HINT}") from None


class HFLoader(ProcessingRole):
    """The processing role of the transformers adapters: ``hf:`` specs and the model's own processor."""

    spec_prefixes = ("hf",)
    #: How texts are padded (see :class:`~captum_gradeclip.adapters.processing.HFProcessing`).
    text_padding = "longest"

    @classmethod
    def load_spec(cls, name: str, spec: str, *, allow_missing_weights: bool = False) -> tuple[nn.Module, object]:
        return hf_pretrained(name, spec, allow_missing_weights=allow_missing_weights)

    def processing(self, processor: object, tokenizer: object = None) -> Processing:
        context = getattr(self, "text_context_length", None)
        max_tokens = context() if callable(context) and hasattr(self, "embed_texts") else None
        if max_tokens is None:
            max_tokens = getattr(processor, "context_length", None)  # ShapesProcessor
        return HFProcessing(processor, self.text_padding, max_tokens, tokenizer)
