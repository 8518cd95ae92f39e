"""Region embeddings from Grad-ECLIP maps and the region-phrase contrastive loss."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_gradeclip.adapters.dense import value_path_tokens
from captum_gradeclip.attr import GradECLIP
from captum_gradeclip.wrappers import ImageTextSimilarity


def phrase_maps(
    similarity: ImageTextSimilarity,
    pixel_values: Tensor,
    targets: Tensor,
    *,
    layers: int = 1,
    block: int = -1,
) -> Tensor:
    r"""Signed Grad-ECLIP maps (no final ReLU) for (image, phrase) pairs.

    Args:
        similarity (ImageTextSimilarity): a wrapper whose references are the phrases.
        pixel_values (Tensor): ``(N, C, H, W)`` images.
        targets (Tensor): ``(N, K)`` long, the phrase (wrapper column) of each of the K
            slots of each image; ``-1`` marks an empty slot.
        layers (int, optional): how many consecutive attention blocks, ending at ``block``,
            draw the map (Grad-ECLIP's ``layers``: their signed maps are summed). Default: 1.
        block (int, optional): the last explained attention block of the image tower, as an
            index into :meth:`~captum_gradeclip.ImageTextSimilarity.explained_blocks`
            (negative counts from the end). Default: -1, the last block.

    Returns:
        *Tensor* ``(N, K, h, w)``: :math:`\sum_h \lambda^h_i (w^h \cdot v^h_i)` per pair, 0 in
        empty slots. Detached.

    Examples::

        >>> sim = ImageTextSimilarity(model, ["a yellow square", "a red square"], processor=processor)
        >>> maps = phrase_maps(sim, pixel_values, torch.tensor([[0, 1, -1]]))  # image 0: phrases 0, 1, one empty slot
        >>> maps.shape
        torch.Size([1, 3, 8, 8])
    """
    if targets.ndim != 2 or targets.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"`targets` must be (N, K) with N = {pixel_values.shape[0]}; got {tuple(targets.shape)}")
    blocks = similarity.explained_blocks()
    if isinstance(block, bool) or not isinstance(block, int) or not -len(blocks) <= block < len(blocks):
        raise ValueError(
            f"`block` must be an int in [{-len(blocks)}, {len(blocks) - 1}] (an image block); got {block!r}"
        )
    explainer = GradECLIP(similarity, blocks[block], relu_attributions=False, layers=layers)
    with warnings.catch_warnings():  # fine-tuning explains the model in train mode on purpose
        warnings.filterwarnings("ignore", message="the model is in train mode")
        every = explainer.attribute(pixel_values)  # (N, M, h, w): all columns
    index = targets.clamp(min=0)[:, :, None, None].expand(-1, -1, *every.shape[-2:])
    return (every.gather(1, index) * (targets >= 0)[:, :, None, None]).detach()


def pooling_weights(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-map min-max normalisation to [0, 1], then to weights that sum to 1 over the patches.

    Args:
        maps (Tensor): ``(N, K, h, w)`` signed maps.
        eps (float, optional): guards a constant map, which gets uniform weights. Default: 1e-8.

    Returns:
        *Tensor* ``(N, K, h * w)``.

    Examples::

        >>> pooling_weights(torch.tensor([[[[-1.0, 0.0], [1.0, 1.0]]]]))
        tensor([[[0.0000, 0.2000, 0.4000, 0.4000]]])
    """
    flat = maps.flatten(2)
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    span = high - low
    scaled = torch.where(span > eps, (flat - low) / span.clamp(min=eps), torch.ones_like(flat))
    return scaled / scaled.sum(-1, keepdim=True)


def region_embeddings(dense: Tensor, weights: Tensor) -> Tensor:
    """Weighted pooling of dense patch features into one embedding per region.

    Args:
        dense (Tensor): ``(N, T, E)`` value-path tokens with CLS first (as
            :func:`~captum_gradeclip.adapters.dense.value_path_tokens` returns them), or
            ``(N, P, E)`` patch tokens only.
        weights (Tensor): ``(N, K, P)`` or ``(N, K, h, w)`` patch weights of K regions per image.

    Returns:
        *Tensor* ``(N, K, E)``, not normalised.

    Examples::

        >>> maps = phrase_maps(sim, pixel_values, torch.tensor([[0, 1]]))
        >>> regions = region_embeddings(value_path_tokens(sim, pixel_values), pooling_weights(maps))
        >>> regions.shape
        torch.Size([1, 2, 64])
    """
    weights = weights.flatten(2) if weights.ndim == 4 else weights
    if weights.ndim != 3 or dense.ndim != 3:
        raise ValueError("`dense` must be (N, T, E) and `weights` (N, K, P) or (N, K, h, w)")
    patches = weights.shape[-1]
    if dense.shape[1] == patches + 1:
        dense = dense[:, 1:]
    if dense.shape[1] != patches:
        raise ValueError(f"`weights` cover {patches} patches but `dense` has {dense.shape[1]} tokens")
    return torch.einsum("nkp,npe->nke", weights.to(dense.dtype), dense)


def region_phrase_loss(
    regions: Tensor, phrase_embeds: Tensor, targets: Tensor, weights: Tensor | None = None, scale: float = 20.0
) -> Tensor:
    """Contrastive loss of regions against phrases: each region's own phrase against the batch's others.

    Args:
        regions (Tensor): ``(R, E)`` region embeddings.
        phrase_embeds (Tensor): ``(U, E)`` embeddings of the batch's distinct phrases.
        targets (Tensor): ``(R,)`` long, each region's phrase in ``phrase_embeds``.
        weights (Tensor, optional): ``(R,)`` non-negative weights (e.g. the peak of each map).
            Default: equal weights.
        scale (float, optional): the logit scale (inverse temperature). Default: 20.

    Returns:
        *Tensor*: the weighted mean cross-entropy, a scalar.

    Examples::

        >>> regions, phrase_embeds = torch.randn(3, 64), torch.randn(2, 64)
        >>> loss = region_phrase_loss(regions, phrase_embeds, torch.tensor([0, 1, 1]))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """
    if regions.ndim != 2 or phrase_embeds.ndim != 2 or targets.shape != regions.shape[:1]:
        raise ValueError("`regions` must be (R, E), `phrase_embeds` (U, E) and `targets` (R,)")
    logits = scale * F.normalize(regions, dim=-1) @ F.normalize(phrase_embeds, dim=-1).T
    losses = F.cross_entropy(logits, targets, reduction="none")
    if weights is None:
        return losses.mean()
    if weights.shape != losses.shape or (weights < 0).any():
        raise ValueError(f"`weights` must be ({len(losses)},) and non-negative")
    return (weights * losses).sum() / weights.sum().clamp(min=1e-12)


def clip_loss(image_embeds: Tensor, text_embeds: Tensor, scale: Tensor | float) -> Tensor:
    """The symmetric CLIP loss of matched ``(B, E)`` image and text embeddings.

    ``text_embeds`` may have ``B + N`` rows: the first ``B`` match the images, the other ``N``
    are further negatives for the image-to-text side (the text-to-image side uses the ``B``).

    Examples::

        >>> embeds = torch.eye(3)  # three matched pairs, orthogonal to each other
        >>> round(float(clip_loss(embeds, embeds, scale=20.0)), 6)
        0.0
        >>> round(float(clip_loss(embeds, embeds.roll(1, 0), scale=20.0)), 1)  # every pair mismatched
        20.0
    """
    b = len(image_embeds)
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or len(text_embeds) < b:
        raise ValueError("`image_embeds` must be (B, E) and `text_embeds` (B + N, E), N >= 0")
    logits = scale * F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
    labels = torch.arange(b, device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :b].T, labels)) / 2


def anchor_distance(embeds: Tensor, frozen: Tensor) -> Tensor:
    r"""The mean cosine distance :math:`1 - \cos(e_i, f_i)` of embeddings from their frozen counterparts.

    Zero when every embedding points where its frozen one does; its gradient turns each
    embedding back toward its frozen one.

    Args:
        embeds (Tensor): ``(N, E)`` embeddings being trained.
        frozen (Tensor): ``(N, E)`` the frozen model's embeddings of the same inputs (detached).

    Returns:
        *Tensor*: a scalar in [0, 2].

    Examples::

        >>> frozen = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> float(anchor_distance(3 * frozen, frozen))  # the length does not count
        0.0
        >>> float(anchor_distance(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), frozen))  # one turned by 90 degrees
        0.5
    """
    if embeds.ndim != 2 or embeds.shape != frozen.shape:
        raise ValueError(
            f"`embeds` and `frozen` must both be (N, E) of one shape; got {tuple(embeds.shape)}, {tuple(frozen.shape)}"
        )
    return (1 - F.cosine_similarity(embeds, frozen.detach(), dim=-1)).mean()


def relation_distillation(
    image_embeds: Tensor, text_embeds: Tensor, frozen_images: Tensor, frozen_texts: Tensor, scale: Tensor | float
) -> Tensor:
    """KL divergence of the student's image-text retrieval distributions from a frozen model's.

    For each image, the softmax over the ``B + N`` texts (and for each of the first ``B``
    texts, the softmax over the ``B`` images), at the logit ``scale``: the frozen model's
    distribution is the target. Zero when the student ranks and spaces the texts as the frozen
    model does, whatever the embeddings' absolute direction.

    Args:
        image_embeds (Tensor): ``(B, E)`` the student's image embeddings.
        text_embeds (Tensor): ``(B + N, E)`` its text embeddings, the first ``B`` matching the images.
        frozen_images (Tensor): ``(B, E)`` the frozen model's image embeddings (detached).
        frozen_texts (Tensor): ``(B + N, E)`` the frozen model's text embeddings (detached).
        scale (Tensor or float): the logit scale.

    Returns:
        *Tensor*: the mean of the two directions' batch-mean KL divergences, a scalar >= 0.

    Examples::

        >>> images, texts = torch.randn(3, 8), torch.randn(5, 8)
        >>> float(relation_distillation(images, texts, 2 * images, texts, 10.0))  # lengths do not count
        0.0
    """
    b = len(image_embeds)
    shapes_ok = image_embeds.shape == frozen_images.shape and text_embeds.shape == frozen_texts.shape
    if not shapes_ok or image_embeds.ndim != 2 or len(text_embeds) < b:
        raise ValueError("`image_embeds`, `frozen_images` must be (B, E) and `text_embeds`, `frozen_texts` (B + N, E)")

    def logits(images: Tensor, texts: Tensor) -> Tensor:
        return scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T

    student, target = logits(image_embeds, text_embeds), logits(frozen_images, frozen_texts).detach()
    image_to_text = F.kl_div(student.log_softmax(-1), target.log_softmax(-1), log_target=True, reduction="batchmean")
    text_to_image = F.kl_div(
        student[:, :b].T.log_softmax(-1), target[:, :b].T.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    return (image_to_text + text_to_image) / 2


def mask_weights(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch weights of object masks or boxes: the covered fraction of each patch, summing to 1.

    Args:
        masks (Tensor): ``(N, K, H, W)`` bool or float masks (a box is a filled rectangle).
        grid (tuple[int, int]): the patch grid ``(h, w)``.

    Returns:
        *Tensor* ``(N, K, h * w)``.

    Examples::

        >>> weights = mask_weights(torch.from_numpy(scene.masks)[None], (8, 8))  # (1, K, 64)
        >>> weights.shape, weights.sum(-1)
        (torch.Size([1, 3, 64]), tensor([[1., 1., 1.]]))
    """
    cover = F.adaptive_avg_pool2d(masks.float().flatten(0, 1)[:, None], grid)[:, 0]
    cover = cover.reshape(*masks.shape[:2], -1)
    return cover / cover.sum(-1, keepdim=True).clamp(min=1e-12)


@torch.no_grad()
def region_zero_shot(similarity: ImageTextSimilarity, pixel_values: Tensor, masks: Tensor, labels: Tensor) -> Tensor:
    """Classifies each masked region among the wrapper's texts with its pooled value-path embedding.

    Args:
        similarity (ImageTextSimilarity): a wrapper whose references are the class prompts.
        pixel_values (Tensor): ``(N, C, H, W)`` images.
        masks (Tensor): ``(N, K, H', W')`` region masks or boxes at any resolution.
        labels (Tensor): ``(N, K)`` long, the right prompt of each region; ``-1`` for none.

    Returns:
        *Tensor* ``(R,)`` bool: whether each labelled region's best prompt is right.

    Examples::

        >>> sim = ImageTextSimilarity(model, scene.prompts + scene.absent_prompts, processor=processor)
        >>> masks = torch.from_numpy(scene.masks)[None]  # (1, K, H, W): each object's mask
        >>> labels = torch.arange(len(scene.objects))[None]  # object k's prompt is column k
        >>> region_zero_shot(sim, pixel_values, masks, labels)  # the first object's region is misread
        tensor([False,  True,  True])
    """
    if masks.ndim != 4 or labels.shape != masks.shape[:2] or masks.shape[0] != pixel_values.shape[0]:
        raise ValueError("`masks` must be (N, K, H, W) and `labels` (N, K), N matching `pixel_values`")
    dense = value_path_tokens(similarity, pixel_values)
    size = similarity.adapter.patch_size()
    grid = (pixel_values.shape[-2] // size[0], pixel_values.shape[-1] // size[1])
    regions = region_embeddings(dense, mask_weights(masks, grid))
    keep = labels >= 0
    scores = similarity.similarity(regions[keep])
    return scores.argmax(-1) == labels[keep]
