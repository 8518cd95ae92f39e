"""Explanation quality of Grad-ECLIP and the baselines, side by side, on one model and one data set.

    python -m benchmarks.quality --model shapes --scenes 500             # held-out ShapesCLIP scenes -> docs/quality.md
    python -m benchmarks.quality --model shapes:resnet --scenes 500      # the ResNet ShapesCLIP, beside the ViT
    python -m benchmarks.quality --model hf:NAME_OR_PATH --data DIR      # any HF CLIP on a folder of images + one CSV

``DIR`` holds the images and one CSV with a header: ``image,text[,box]`` (``box`` as ``x0 y0 x1 y1`` in the
image's pixels). Images are resized to the model's input size (no crop, so the boxes stay valid) and
normalised by the model's own processor.

Every method explains the similarity of each image with its own text, against the data set's texts (image
side) and of each text with its own image, against the data set's images (text side). Reported per method:

- deletion AUC (lower is better): most relevant pixels first replaced by uniform noise (the Grad-ECLIP
  paper's baseline), ``--steps`` steps to 100%, re-scored with the wrapper's score (``--score``: cosine by
  default; ``softmax`` over the data set's texts or images; one table per score);
- insertion AUC (higher is better): most relevant pixels first put back into a blurred image;
- pointing game and energy pointing game (higher is better) on the object's mask or box;
- text deletion and insertion AUCs over the words (SOS and EOS never touched);
- time per explanation relative to one no-grad forward pass of the same batch.

The methods are the registry's (:mod:`captum_gradeclip.methods`): Grad-ECLIP, the baselines, and Captum's own
attribution classes (``captum:IntegratedGradients``, ``captum:Occlusion``, ``captum:FeatureAblation``,
``captum:Saliency``, ``captum:InputXGradient``, ``captum:LayerGradCam``, from
:mod:`captum_gradeclip.baselines.captum_methods`), whose settings the page states. A random map and a centred
Gaussian are controls; every method should beat the random map, and the table says where one does not. A method
that does not apply to the model (it raises a TypeError, e.g. rollout on the ResNet's attention pool) is ``n/a``
in the table, with the reason below it; so is an image-only method on the text side.

Each model's results are one section of ``--out``, between ``<!-- quality.py: MODEL -->`` markers: a run
replaces its own model's section and keeps the others (so the ViT and the ResNet ShapesCLIP share one page).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg
from benchmarks._pages import without_options, write_section
from captum_gradeclip import methods as registry
from captum_gradeclip import metrics
from captum_gradeclip.baselines.captum_methods import CAPTUM_SETTINGS

hf_logging.set_verbosity_error()

#: Scenes of the shapes world come from these seeds on; training draws from a generator stream, and
#: tools.shapes_quality uses the seeds from 1e6 and 2e6.
SHAPES_SEED = 3_000_000
RANDOM = "Random map (control)"
CENTRE = "Centre Gaussian (control)"


@dataclass
class Task:
    """Everything a benchmark run needs.

    Attributes:
        name: a short description for the table's header.
        model, processor: the model and its own processor.
        pixels: ``(N, C, H, W)`` normalised images.
        prompts: the image side's texts; ``image_target[i]`` indexes the text of image i.
        regions: ``(N, H, W)`` bool object masks (or boxes as masks), or ``None``.
        captions: the text side's texts; caption i is explained against image i.
    """

    name: str
    model: nn.Module
    processor: object
    pixels: Tensor
    prompts: list[str]
    image_target: Tensor
    regions: Tensor | None
    captions: list[str]
    normalization: tuple[list[float], list[float]]


# -- controls ---------------------------------------------------------------------------------------------


class RandomMap:
    """Uniform noise on the patch grid (image) or over the tokens (text): the floor every method must beat."""

    def __init__(self, sim: cg.ImageTextSimilarity | cg.TextImageSimilarity, seed: int = 0) -> None:
        self.sim, self.generator = sim, torch.Generator().manual_seed(seed)

    def attribute(self, inputs: Tensor, target: object = None, additional_forward_args: object = None) -> Tensor:
        if self.sim.modality == "text":
            return torch.rand(inputs.shape, generator=self.generator).to(inputs.device)
        h, w = self.sim.adapter.patch_grid(inputs)
        return torch.rand(inputs.shape[0], 1, h, w, generator=self.generator).to(inputs.device)


class CentreGaussian:
    """A Gaussian bump at the image centre (sigma a quarter of the side): the centre-bias control."""

    def __init__(self, sim: cg.ImageTextSimilarity, seed: int = 0) -> None:
        self.sim = sim

    def attribute(self, inputs: Tensor, target: object = None, additional_forward_args: object = None) -> Tensor:
        h, w = inputs.shape[-2:]
        ys = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / (h / 4)
        xs = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / (w / 4)
        bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / 2)
        return bump.expand(inputs.shape[0], 1, h, w).to(inputs.device)


def _settings(args: argparse.Namespace, method: registry.Method) -> dict[str, object]:
    """The command line's options for ``method``, explicitly per method (``build`` refuses options it lacks)."""
    per_method: dict[str, dict[str, object]] = {
        "RISE": dict(n_masks=args.rise_masks, batch_size=args.metric_batch_size, seed=args.seed),
        "M2IB": dict(steps=args.m2ib_steps, seed=args.seed),
    }
    return per_method.get(method.name, {})


def image_methods(args: argparse.Namespace) -> dict[str, Callable[[cg.ImageTextSimilarity], object]]:
    """Every registered image method (:mod:`captum_gradeclip.methods`), then the two controls."""
    made = {m.name: functools.partial(m.build, **_settings(args, m)) for m in registry.available("image")}
    return {**made, RANDOM: lambda s: RandomMap(s, args.seed), CENTRE: lambda s: CentreGaussian(s)}


def text_methods(args: argparse.Namespace) -> dict[str, Callable[[cg.TextImageSimilarity], object]]:
    """Every registered text method, then the random control."""
    made = {m.name: functools.partial(m.build, **_settings(args, m)) for m in registry.available("text")}
    return {**made, RANDOM: lambda s: RandomMap(s, args.seed)}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def select_methods(requested: list[str] | None, args: argparse.Namespace) -> set[str] | None:
    """The methods that ``--methods`` names (``None``: all of them).

    A name matches a method when it equals the method's name, or the start of it, up to case, spaces and
    punctuation: ``gradeclip`` picks both Grad-ECLIP modes, ``"Grad-ECLIP (paper)"`` or ``gradeclippaper`` one,
    ``game`` GAME.

    Raises:
        ValueError: for a name that matches no method, listing the valid ones.
    """
    if not requested:
        return None
    names = list(dict.fromkeys([*image_methods(args), *text_methods(args)]))
    chosen, unknown = set(), []
    for name in requested:
        found = [m for m in names if _key(m).startswith(_key(name))] if _key(name) else []
        chosen.update(found)
        if not found:
            unknown.append(name)
    if unknown:
        valid = ", ".join(repr(m) for m in names)
        raise ValueError(f"`--methods`: no method is called {', '.join(map(repr, unknown))}; the methods are {valid}")
    return chosen


# -- tasks ------------------------------------------------------------------------------------------------


def _tokenizer(processor: object) -> Callable[..., dict]:
    return getattr(processor, "tokenizer", processor)  # type: ignore[return-value]


def _fixed_length(processor: object) -> bool:
    """The ResNet ShapesCLIP's ``ShapesProcessor``: open_clip's text tower takes texts of its context length only,
    which the processor (not its tokenizer) pads to."""
    return hasattr(processor, "context_length") and hasattr(processor, "tokenizer")


def caption_tokens(task: Task) -> tuple[Callable[..., dict], Tensor, Tensor]:
    """The text side's tokenizer, and the captions' ``input_ids`` and ``attention_mask``, padded."""
    tokenizer = task.processor if _fixed_length(task.processor) else _tokenizer(task.processor)
    batch = tokenizer(task.captions, padding=True, return_tensors="pt")  # type: ignore[operator]
    return tokenizer, batch["input_ids"], batch["attention_mask"]  # type: ignore[return-value]


def _load_hf(name: str) -> tuple[nn.Module, object]:
    """The command line's loader (:func:`captum_gradeclip.cli.models.hf_pretrained`): a directory or a cached name
    loads offline."""
    from captum_gradeclip.cli.commands import CLIError
    from captum_gradeclip.loading import hf_pretrained

    try:
        model, processor = hf_pretrained(name)
    except CLIError as error:
        raise ValueError(str(error)) from None
    return model.eval(), processor


def hf_task(name: str, data: Path, limit: int | None) -> Task:
    """A model from ``from_pretrained`` and a folder of images with one CSV of ``image,text[,box]``."""
    from PIL import Image

    tables = sorted(data.glob("*.csv"))
    if len(tables) != 1:
        raise ValueError(f"`--data` {data} must hold exactly one CSV of image,text[,box]; found {len(tables)}")
    with tables[0].open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "text"} <= set(rows[0]):
        raise ValueError(f"{tables[0].name} must have a header with the columns image,text[,box]")
    rows = rows[:limit] if limit else rows
    model, processor = _load_hf(name)
    adapter = cg.get_adapter(model)
    size = adapter.image_size()
    image_processor = getattr(processor, "image_processor", processor)
    images, regions = [], []
    for row in rows:
        image = Image.open(data / row["image"]).convert("RGB")
        images.append(image)
        if row.get("box"):
            x0, y0, x1, y1 = (float(v) for v in row["box"].split())
            sx, sy = size[1] / image.width, size[0] / image.height
            regions.append(metrics.boxes_to_masks(torch.tensor([[x0 * sx, y0 * sy, x1 * sx, y1 * sy]]), size)[0])
    pixels = image_processor(
        images=images, size={"height": size[0], "width": size[1]}, do_center_crop=False, return_tensors="pt"
    )["pixel_values"]
    if regions and len(regions) != len(rows):
        warnings.warn(
            f"{tables[0].name}: {len(rows) - len(regions)} of {len(rows)} rows have no box, so the pointing games "
            "are left out for every row; give every row a box, or none",
            UserWarning,
            stacklevel=2,
        )
    prompts = sorted({r["text"] for r in rows})
    return Task(
        name=f"`hf:{name}` on `{data.name}` ({len(rows)} images)",
        model=model,
        processor=processor,
        pixels=pixels,
        prompts=prompts,
        image_target=torch.tensor([prompts.index(r["text"]) for r in rows]),
        regions=torch.stack(regions) if len(regions) == len(rows) else None,
        captions=[r["text"] for r in rows],
        normalization=(list(image_processor.image_mean), list(image_processor.image_std)),
    )


def shapes_specs() -> dict[str, str]:
    """The ShapesCLIP ``--model`` specs and their backbones (:data:`captum_gradeclip.zoo.MODEL_SPECS`)."""
    from captum_gradeclip.zoo import MODEL_SPECS

    return MODEL_SPECS


def shapes_task(scenes: int, backbone: str = "vit") -> Task:
    """ShapesCLIP on held-out scenes: each image explained for one of its objects, against all 24 prompts.

    ``backbone``: the backbone of a ``--model`` spec in :data:`captum_gradeclip.zoo.MODEL_SPECS`: ``"vit"``
    (``--model shapes``), ``"resnet"`` (``--model shapes:resnet``, open_clip's ModifiedResNet; its processor resizes
    the 64x64 scenes to 128x128, and the masks stay 64x64), ...
    """
    try:
        from captum_gradeclip.zoo import load_shapes_clip, shapes
    except ImportError as error:
        raise ValueError("`--model shapes` needs captum_gradeclip.zoo.load_shapes_clip and zoo.shapes") from error
    try:
        model, processor = load_shapes_clip(backbone)
    except ImportError as error:
        raise ValueError(str(error)) from error
    weights = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    world = shapes.make_scenes(range(SHAPES_SEED, SHAPES_SEED + scenes))
    picked = [s.objects[i % len(s.objects)] for i, s in enumerate(world)]
    prompts = shapes.all_prompts()
    image_processor = getattr(processor, "image_processor", processor)
    kinds = {
        "vit": "ViT",
        "resnet": "ResNet: open_clip ModifiedResNet, attention pool, 4x4 grid",
        "vit-deep": "Deep: ViT, 6 layers, 14x14 grid",
    }
    kind = kinds.get(backbone, backbone)
    return Task(
        name=f"ShapesCLIP ({kind}, parameters sha256 {weights[:12]}) on {scenes} held-out scenes "
        f"(seeds {SHAPES_SEED}..{SHAPES_SEED + scenes - 1})",
        model=model,
        processor=processor,
        pixels=processor(images=[s.image for s in world], return_tensors="pt")["pixel_values"],
        prompts=prompts,
        image_target=torch.tensor([prompts.index(o.prompt) for o in picked]),
        regions=torch.stack([torch.as_tensor(o.mask) for o in picked]),
        captions=[s.caption for s in world],
        normalization=(list(image_processor.image_mean), list(image_processor.image_std)),
    )


# -- measuring --------------------------------------------------------------------------------------------


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _explain(
    explainer: object, inputs: Tensor, target: Tensor, extra: Tensor | None, forward: Callable, batch: int
) -> tuple[Tensor, float]:
    """Attributions of all inputs, and the median over batches of their time over that of a no-grad forward
    pass of the same batch (timed just before and just after, and averaged: the machine's load may drift)."""
    out, ratios = [], []
    batches = _batches(inputs.shape[0], batch)

    def args_of(b: slice) -> tuple | None:
        return (extra[b],) if extra is not None else None

    with torch.no_grad():  # warm-up, untimed: first calls pay for allocation and lazy initialisation
        forward(inputs[batches[0]], *(args_of(batches[0]) or ()))
    explainer.attribute(
        inputs[batches[0]], target=target[batches[0]].tolist(), additional_forward_args=args_of(batches[0])
    )
    for b in batches:
        before = _timed(lambda b=b: forward(inputs[b], *(args_of(b) or ())))
        start = time.perf_counter()
        out.append(explainer.attribute(inputs[b], target=target[b].tolist(), additional_forward_args=args_of(b)))
        spent = time.perf_counter() - start
        after = _timed(lambda b=b: forward(inputs[b], *(args_of(b) or ())))
        ratios.append(2 * spent / (before + after))
    return torch.cat(out), statistics.median(ratios)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - start


def image_similarity(task: Task, score: str) -> cg.ImageTextSimilarity:
    """The image side's wrapper of ``task``: its model against its prompts, tokenized as its captions are."""
    text_source = "processor" if _fixed_length(task.processor) else "tokenizer"
    return cg.ImageTextSimilarity(task.model, task.prompts, score=score, **{text_source: caption_tokens(task)[0]})


def run(
    task: Task,
    args: argparse.Namespace,
    score: str = "cosine",
    done: dict[str, dict[str, float]] | None = None,
    checkpoint: Callable[[dict[str, dict[str, float]]], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Every method's metrics with the wrappers' ``score``: ``{method: {column: value}}``.

    ``done`` holds results of an interrupted run to keep; ``checkpoint`` is called after every method.
    A method that raises a TypeError for this model (it does not apply) gets no values on that side; the
    reason is kept under the key ``NOT_APPLICABLE`` of its row (``{"image": reason, "text": reason}``).
    """
    device = torch.device(args.device)
    model = task.model.to(device)
    pixels = task.pixels.to(device)
    target = task.image_target.to(device)
    _, ids, mask = caption_tokens(task)
    ids, mask = ids.to(device), mask.to(device)
    sim = image_similarity(task, score)
    own = torch.arange(len(task.captions), device=device)
    tsim = cg.TextImageSimilarity(model, images=pixels, score=score)
    common = dict(steps=args.steps, batch_size=args.metric_batch_size, seed=args.seed)
    results: dict[str, dict[str, float]] = {m: dict(r) for m, r in (done or {}).items()}
    chosen = select_methods(args.methods, args)
    for name, make in image_methods(args).items():
        if (chosen and name not in chosen and name != RANDOM) or "deletion" in results.get(name, {}):
            continue
        try:
            maps, ratio = _explain(make(sim), pixels, target, None, sim, args.batch_size)
        except TypeError as error:  # the method does not apply to this model
            _not_applicable(results, name, "image", error)
            continue
        row = {"time_image": ratio, **image_metrics(task, args, sim, pixels, maps, target)}
        results.setdefault(name, {}).update(row)
        print(f"  {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()), file=sys.stderr)
        if checkpoint is not None:
            checkpoint(results)
    for name, make in text_methods(args).items():
        if (chosen and name not in chosen and name != RANDOM) or "text_deletion" in results.get(name, {}):
            continue
        try:
            scores, ratio = _explain(make(tsim), ids, own, mask, tsim, args.batch_size)
        except TypeError as error:
            _not_applicable(results, name, "text", error)
            continue
        curves = {
            f"text_{kind}": float(fn(tsim, ids, scores, own, (mask,), **common).auc.mean())
            for kind, fn in (("deletion", metrics.text_deletion), ("insertion", metrics.text_insertion))
        }
        results.setdefault(name, {}).update(curves, time_text=ratio)
        print(f"  {name} (text): " + ", ".join(f"{k}={v:.3f}" for k, v in curves.items()), file=sys.stderr)
        if checkpoint is not None:
            checkpoint(results)
    for method in registry.available("image"):  # an image-only method is n/a on the text side, with its reason
        if "text" not in method.modalities and (not chosen or method.name in chosen):
            reason = getattr(method.cls, "why_not_text", "it explains images only")
            results.setdefault(method.name, {}).setdefault(NOT_APPLICABLE, {})["text"] = reason
    order = [*image_methods(args), *text_methods(args)]  # the table's order, also after a resumed run
    return {m: results[m] for m in sorted(results, key=lambda m: order.index(m) if m in order else len(order))}


def image_metrics(
    task: Task, args: argparse.Namespace, sim: cg.ImageTextSimilarity, pixels: Tensor, maps: Tensor, target: Tensor
) -> dict[str, float]:
    """The image side's columns of one method's maps: deletion and insertion AUCs, and the pointing games where the
    task has regions."""
    common = dict(steps=args.steps, batch_size=args.metric_batch_size, seed=args.seed)
    deletion = metrics.image_deletion(
        sim, pixels, maps, target, baseline="random", normalization=task.normalization, **common
    )
    insertion = metrics.image_insertion(sim, pixels, maps, target, baseline="blur", **common)
    row = {"deletion": float(deletion.auc.mean()), "insertion": float(insertion.auc.mean())}
    if task.regions is not None:
        regions = task.regions.to(pixels.device)
        row["pointing"] = float(metrics.pointing_game(maps, masks=regions, tolerance=args.tolerance).mean())
        row["energy"] = float(metrics.energy_pointing_game(maps, masks=regions).mean())
    return row


def layer_study(
    task: Task,
    args: argparse.Namespace,
    score: str,
    done: dict[str, dict[str, float]] | None = None,
    checkpoint: Callable[[dict[str, dict[str, float]]], None] | None = None,
) -> dict[str, dict[str, float]]:
    """The paper's layer study: Grad-ECLIP (native) over the last ``k`` blocks, ``k = 1..args.layer_study``,
    on the image side, with the main table's metrics: ``{"layers=k": {column: value}}``."""
    device = torch.device(args.device)
    task.model.to(device)  # in place: the wrapper below holds it
    pixels, target = task.pixels.to(device), task.image_target.to(device)
    sim = image_similarity(task, score)
    results: dict[str, dict[str, float]] = {m: dict(r) for m, r in (done or {}).items()}
    for k in range(1, args.layer_study + 1):
        name = f"layers={k}"
        if "deletion" in results.get(name, {}):
            continue
        maps, ratio = _explain(cg.GradECLIP(sim, layers=k), pixels, target, None, sim, args.batch_size)
        row = {**image_metrics(task, args, sim, pixels, maps, target), "time_image": ratio}
        results[name] = row
        print(f"  Grad-ECLIP {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()), file=sys.stderr)
        if checkpoint is not None:
            checkpoint(results)
    return results


def study_table(study: dict[str, dict[str, float]]) -> list[str]:
    """The layer study's rows, the best value per column in bold."""
    keys = [c for c in COLUMNS if any(c[0] in r for r in study.values())]
    best = {k: _best(study, k, h) for k, _, h in keys if h is not None}
    lines = ["| Grad-ECLIP (native) | " + " | ".join(h for _, h, _ in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in study.items():
        cells = [f"{row[k]:.2f}x" if k.startswith("time") else f"{row[k]:.3f}" for k, _, _ in keys]
        cells = [f"**{c}**" if best.get(k) == name else c for c, (k, _, _) in zip(cells, keys, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


#: The results key of a score's layer study.
STUDY = "layer study: "


#: The key of a result row that holds why a method does not apply, per side.
NOT_APPLICABLE = "not_applicable"


def _not_applicable(results: dict, name: str, side: str, error: Exception) -> None:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    results.setdefault(name, {}).setdefault(NOT_APPLICABLE, {})[side] = reason
    print(f"  {name} ({side}): n/a: {reason}", file=sys.stderr)


def _values(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != NOT_APPLICABLE}


# -- the table ----------------------------------------------------------------------------------------------

#: (key, header, higher is better)
COLUMNS = [
    ("deletion", "deletion AUC ↓", False),
    ("insertion", "insertion AUC ↑", True),
    ("pointing", "pointing game ↑", True),
    ("energy", "energy PG ↑", True),
    ("text_deletion", "text deletion AUC ↓", False),
    ("text_insertion", "text insertion AUC ↑", True),
    ("time_image", "time / forward (image)", None),
    ("time_text", "time / forward (text)", None),
]


def _best(results: dict[str, dict[str, float]], key: str, higher: bool) -> str | None:
    real = {m: r[key] for m, r in results.items() if key in r and key != NOT_APPLICABLE and "(control)" not in m}
    if not real:
        return None
    return (max if higher else min)(real, key=real.get)  # type: ignore[type-var]


def table(results: dict[str, dict[str, float]]) -> str:
    """The markdown table: the best real method per metric in bold, and the metrics where a method
    does not beat the random map."""
    keys = [c for c in COLUMNS if any(c[0] in r for r in results.values())]
    best = {k: _best(results, k, h) for k, _, h in keys if h is not None}
    lines = [
        "| method | " + " | ".join(h for _, h, _ in keys) + " | not better than random |",
        "|---|" + "---|" * len(keys) + "---|",
    ]
    floor = results.get(RANDOM, {})
    for method, row in results.items():
        cells = []
        for key, _, _ in keys:
            if key not in row:
                cells.append("n/a")
                continue
            text = f"{row[key]:.2f}x" if key.startswith("time") else f"{row[key]:.3f}"
            cells.append(f"**{text}**" if best.get(key) == method else text)
        worse = [
            h.rsplit(" ", 1)[0]
            for k, h, higher in keys
            if higher is not None
            and k in row
            and k in floor
            and not (row[k] > floor[k] if higher else row[k] < floor[k])
        ]
        verdict = "-" if method == RANDOM else (", ".join(worse) if worse else "none")
        if not _values(row):
            verdict = "n/a"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def findings(results: dict[str, dict[str, float]]) -> list[str]:
    """Where Grad-ECLIP is first and where it is not, in words."""
    out = []
    for key, header, higher in COLUMNS:
        if higher is None:
            continue
        best = _best(results, key, higher)
        if best is None:
            continue
        ours = {m: results[m][key] for m in ("Grad-ECLIP (native)", "Grad-ECLIP (paper)") if key in results.get(m, {})}
        if best in ours:
            out.append(f"- {header}: Grad-ECLIP is first ({best}, {results[best][key]:.3f}).")
        elif ours:
            mine = max(ours, key=ours.get) if higher else min(ours, key=ours.get)  # type: ignore[arg-type]
            out.append(
                f"- {header}: Grad-ECLIP is **not** first: {best} {results[best][key]:.3f} vs {mine} {ours[mine]:.3f}."
            )
    return out


SCORE_WORDS = {
    "cosine": "cosine similarities (the default: no logit scale, no softmax)",
    "logit": "logits (cosine times the model's logit scale)",
    "softmax": "softmax probabilities over the data set's texts (image side) or images (text side)",
}


def not_applicable(results: dict[str, dict]) -> list[str]:
    """The methods that do not apply to the model or to a side, and why (the method's own error message, or why it
    explains images only)."""
    lines = [
        f"- {method} ({side} side): {reason}"
        for method, row in results.items()
        for side, reason in row.get(NOT_APPLICABLE, {}).items()
    ]
    return ["Not applicable (n/a in the table):", "", *lines, ""] if lines else []


def section(
    task: Task, args: argparse.Namespace, score: str, results: dict[str, dict[str, float]], level: str = "##"
) -> list[str]:
    return [
        f"{level} Score: {score}",
        "",
        f"Explained and re-scored: {SCORE_WORDS[score]}.",
        "",
        table(results),
        "",
        *not_applicable(results),
        *findings(results),
        "",
    ]


HEADER = (
    "# Explanation quality benchmark\n\nGenerated by `benchmarks/quality.py`; do not edit by hand. One section per "
    "model, each with the command that reproduces it (a run replaces its own model's section).\n"
)


def markdown(
    task: Task, args: argparse.Namespace, argv: list[str], results: dict[str, dict[str, dict[str, float]]]
) -> str:
    """This model's section of the page."""
    argv = without_options(argv, "--cache")  # where a run keeps its progress is no part of the result
    command = "python -m benchmarks.quality " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"## Model: `--model {args.model}`",
        "",
        "Reproduce with:",
        "",
        f"    {command}",
        "",
        f"Model and data: {task.name}. Image side: each image against its own text among {len(task.prompts)} "
        f"texts; text side: each text against its own image among {task.pixels.shape[0]} images. Curves have "
        f"{args.steps} steps to 100% (deletion: uniform noise; insertion: from a blurred image; text: words "
        f"become padding). Pointing-game tolerance: {args.tolerance} px. RISE: {args.rise_masks} masks; M2IB: "
        f"{args.m2ib_steps} steps. Seed {args.seed}. Time: the median over batches of the explanation's wall time "
        "over that of a no-grad forward pass of the same batch.",
        "",
    ]
    if any(m.startswith("captum:") for per_method in results.values() for m in per_method):
        lines += [CAPTUM_SETTINGS, ""]
    for score, per_method in results.items():
        if score.startswith(STUDY):
            continue
        lines += section(task, args, score, per_method, level="###")
        if STUDY + score in results:
            lines += [
                f"#### Layer study, score {score}",
                "",
                "Grad-ECLIP (native) on the image side with `layers=k`: the maps of the last k attention blocks, "
                "summed, as in the paper's layer ablation (`layers=1` is the table's native row).",
                "",
                *study_table(results[STUDY + score]),
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _without_lists(argv: list[str], options: tuple[str, ...] = ("--methods", "--score")) -> list[str]:
    """``argv`` without the ``options`` and the names after each."""
    out, skipping = [], False
    for arg in argv:
        if arg in options or arg.split("=", 1)[0] in options:
            skipping = arg in options
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="shapes", help=f"ShapesCLIP: {' | '.join(shapes_specs())}; or hf:NAME_OR_PATH"
    )
    parser.add_argument("--data", type=Path, help="folder of images and one CSV image,text[,box] (with hf:)")
    parser.add_argument("--scenes", type=int, default=500, help="held-out shapes scenes (with shapes)")
    parser.add_argument("--limit", type=int, help="use only the first rows of the CSV")
    parser.add_argument(
        "--methods", nargs="+", help="subset of methods, by name or its start, e.g. gradeclip game rollout "
        "(the random control always runs; an unknown name is an error that lists them)"
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.0, help="pointing-game tolerance in pixels")
    parser.add_argument("--rise-masks", type=int, default=1000)
    parser.add_argument("--m2ib-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="images or texts per explanation call")
    parser.add_argument("--metric-batch-size", type=int, default=256, help="perturbed inputs per forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", nargs="+", default=["cosine"], choices=sorted(SCORE_WORDS),
                        help="the wrappers' score; one table each")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "quality.md")
    parser.add_argument("--cache", type=Path, help="JSON of finished methods: a rerun of the same command resumes")
    parser.add_argument(
        "--layer-study", type=int, default=0, metavar="L",
        help="also run Grad-ECLIP (native) with layers=1..L on the image side (the paper's layer study)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        select_methods(args.methods, args)  # unknown names fail before the model loads
        if args.model in shapes_specs():
            task = shapes_task(args.scenes, shapes_specs()[args.model])
        elif args.model.startswith("hf:"):
            if args.data is None:
                raise ValueError("`--model hf:...` needs `--data DIR`")
            task = hf_task(args.model[3:], args.data, args.limit)
        else:
            specs = ", ".join(repr(spec) for spec in shapes_specs())
            raise ValueError(f"`--model` must be {specs} or 'hf:NAME_OR_PATH'; got {args.model!r}")
        # rows are cached one by one, per score: a rerun with other --methods, --score, --layer-study or --out keeps
        # the rows it has
        setup = [task.name, *_without_lists(without_options(argv, "--cache", "--layer-study", "--out"))]
        cached = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}
        results = cached.get("results", {}) if cached.get("setup") == setup else {}

        def checkpoint(score: str) -> Callable[[dict[str, dict[str, float]]], None]:
            def save(partial: dict[str, dict[str, float]]) -> None:
                if args.cache:
                    args.cache.write_text(json.dumps({"setup": setup, "results": {**results, score: partial}}))

            return save

        for score in args.score:
            torch.manual_seed(args.seed)
            print(f"score: {score}", file=sys.stderr)
            results[score] = run(task, args, score, results.get(score), checkpoint(score))
            if args.layer_study:
                study = STUDY + score
                results[study] = layer_study(task, args, score, results.get(study), checkpoint(study))
        results = {key: results[key] for score in args.score for key in (score, STUDY + score) if key in results}
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"quality.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    text = markdown(task, args, argv, results)
    print(text)
    write_section(args.out, "quality.py", HEADER, args.model, text)
    if not math.isfinite(sum(v for per in results.values() for r in per.values() for v in _values(r).values())):
        raise SystemExit("quality.py: a metric is not finite")


if __name__ == "__main__":
    main()
