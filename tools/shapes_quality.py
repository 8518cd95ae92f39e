"""Quality of a shapes-world CLIP on held-out scenes: zero-shot, retrieval, binding and pointing game.

The held-out scenes come from seeds that training never draws (training uses one seeded stream,
:func:`evaluate` uses :func:`shapes.make_scene` on the seeds from :data:`SINGLE_SEED` and
:data:`PAIR_SEED` on).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution

from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo.shapes_clip import encode_images, encode_texts

SINGLE_SEED = 1_000_000
PAIR_SEED = 2_000_000


def _pixels(processor: object, scenes: list[shapes.Scene]) -> torch.Tensor:
    return processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]  # type: ignore[operator]


@torch.no_grad()
def _embed(model: torch.nn.Module, processor: object, scenes: list[shapes.Scene], texts: list[str]) -> tuple:
    device = next(model.parameters()).device  # the inputs go where the model is
    images = F.normalize(encode_images(model, _pixels(processor, scenes).to(device)), dim=-1)
    batch = processor(text=texts, padding=True, return_tensors="pt")  # type: ignore[operator]
    batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}
    return images, F.normalize(encode_texts(model, batch), dim=-1)


def pointing_game(
    model: torch.nn.Module,
    processor: object,
    scenes: list[shapes.Scene],
    mode: str = "native",
    score: str = "cosine",
) -> dict[str, float]:
    """Where the argmax of Grad-ECLIP's map for each object's prompt falls, upsampled to the scene's size.

    Each map explains one object's prompt ("a red circle") against the image, with the wrapper's
    ``score`` over all colour x shape prompts: ``"cosine"`` (the prompt's similarity) or
    ``"softmax"`` (the prompt's zero-shot probability among all prompts).

    Args:
        model, processor: a shapes-world CLIP and its processor.
        scenes (list[Scene]): scenes with two or more objects.
        mode (str, optional): Grad-ECLIP's mode. Default: ``"native"``.
        score (str, optional): the explained score, ``"cosine"``, ``"logit"`` or ``"softmax"``.
            Default: ``"cosine"``.

    Returns:
        *dict* with the fractions of (scene, object) pairs whose argmax is on the named object
        (``"named"``), on another object (``"other"``) or on the background (``"background"``;
        an all-zero map counts as background), and (``"named_cell"``) those whose map's argmax *cell*
        (of the model's grid, before upsampling) overlaps the named object's mask: on a coarse grid
        (the ResNet's 4x4) the upsampled argmax sits at a cell's centre and can miss an object that
        the cell covers in part.

    Examples::

        >>> from tools import shapes_quality as quality
        >>> hits = quality.pointing_game(model, processor, shapes.make_scenes(range(10), n_objects=2), score="softmax")
        >>> sorted(hits), hits["named"] > hits["background"] > hits["other"]
        (['background', 'named', 'named_cell', 'other'], True)
    """
    from captum_gradeclip import GradECLIP, ImageTextSimilarity

    prompts = shapes.all_prompts()
    pixels = _pixels(processor, scenes)
    sim = ImageTextSimilarity(model, prompts, processor=processor, score=score)
    explainer = GradECLIP(sim, mode=mode)
    hits = {"named": 0, "other": 0, "background": 0}
    cells = 0
    size = tuple(scenes[0].masks.shape[-2:])  # the scene's own pixels (the model's input may be resized)
    depth = max(len(s.objects) for s in scenes)
    for k in range(depth):
        rows = [i for i, s in enumerate(scenes) if len(s.objects) > k]
        target = [prompts.index(scenes[i].objects[k].prompt) for i in rows]
        raw = explainer.attribute(pixels[rows], target=target)
        gh, gw = raw.shape[-2:]
        maps = LayerAttribution.interpolate(raw, size, "bilinear")
        for i, grid, coarse in zip(rows, maps[:, 0], raw[:, 0], strict=True):
            cy, cx = np.unravel_index(int(coarse.argmax()), (gh, gw))
            ys = slice(cy * size[0] // gh, (cy + 1) * size[0] // gh)
            xs = slice(cx * size[1] // gw, (cx + 1) * size[1] // gw)
            cells += bool(scenes[i].masks[k, ys, xs].any())
            y, x = np.unravel_index(int(grid.argmax()), size)
            masks = scenes[i].masks
            if masks[k, y, x]:
                hits["named"] += 1
            elif masks[:, y, x].any():
                hits["other"] += 1
            else:
                hits["background"] += 1
    total = sum(hits.values())
    return {**{key: value / total for key, value in hits.items()}, "named_cell": cells / total}


def evaluate(
    model: torch.nn.Module, processor: object, n_single: int = 240, n_pair: int = 200, pointing: bool = True
) -> dict[str, float]:
    """Measures a shapes-world CLIP on held-out scenes.

    Args:
        model, processor: a ShapesCLIP and its processor (as :func:`load_shapes_clip` returns them:
            an HF ``CLIPModel`` or an open_clip ``CLIP``).
        n_single (int, optional): single-object scenes for zero-shot. Default: 240.
        n_pair (int, optional): 2-object scenes, a multiple of 100. Default: 200.
        pointing (bool, optional): also run the Grad-ECLIP pointing game. Default: True.

    Returns:
        *dict*:
        ``zero_shot_top1``: single-object scenes whose best of all colour x shape prompts is right;
        ``pair_recall_at_5``: image-to-text recall@5 of 2-object scenes among their 100 captions
        (averaged over groups of 100);
        ``pair_top2_both_present``: 2-object scenes whose two best prompts are both present objects;
        ``pointing_named`` / ``pointing_other`` / ``pointing_background`` (with ``pointing``): see
        :func:`pointing_game`, explaining each prompt's cosine similarity (and ``pointing_named_cell``);
        ``softmax_pointing_*``: the same for each prompt's zero-shot probability among all prompts.

    Examples::

        >>> from tools import shapes_quality as quality
        >>> result = quality.evaluate(model, processor, n_single=24, n_pair=100, pointing=False)
        >>> sorted(result)
        ['pair_recall_at_5', 'pair_top2_both_present', 'zero_shot_top1']
        >>> result["zero_shot_top1"] > 0.9
        True
    """
    if n_pair % 100 or n_pair < 100:
        raise ValueError(f"`n_pair` must be a positive multiple of 100; got {n_pair}")
    was_training = model.training
    model.eval()
    try:
        prompts = shapes.all_prompts()
        singles = shapes.make_scenes(range(SINGLE_SEED, SINGLE_SEED + n_single), n_objects=1)
        images, text = _embed(model, processor, singles, prompts)
        best = (images @ text.T).argmax(dim=-1).tolist()
        top1 = np.mean([prompts[b] == s.caption for b, s in zip(best, singles, strict=True)])

        pairs = shapes.make_scenes(range(PAIR_SEED, PAIR_SEED + n_pair), n_objects=2)
        recalls, both = [], []
        for start in range(0, n_pair, 100):
            group = pairs[start : start + 100]
            images, text = _embed(model, processor, group, [s.caption for s in group] + prompts)
            scores = images @ text.T
            top5 = scores[:, :100].topk(5, dim=-1).indices
            recalls += [i in row for i, row in enumerate(top5.tolist())]
            top2 = scores[:, 100:].topk(2, dim=-1).indices.tolist()
            both += [{prompts[j] for j in row} == set(s.prompts) for row, s in zip(top2, group, strict=True)]
        result = {
            "zero_shot_top1": float(top1),
            "pair_recall_at_5": float(np.mean(recalls)),
            "pair_top2_both_present": float(np.mean(both)),
        }
        if pointing:
            for prefix, score in (("", "cosine"), ("softmax_", "softmax")):
                points = pointing_game(model, processor, pairs, score=score)
                result.update({f"{prefix}pointing_{k}": v for k, v in points.items()})
        return result
    finally:
        model.train(was_training)
