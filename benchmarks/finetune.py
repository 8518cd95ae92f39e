"""Region-phrase fine-tuning of ShapesCLIP with Grad-ECLIP maps: region accuracy and global recall, before/after.

    python benchmarks/finetune.py                       # the shipped ShapesCLIP, a few minutes of CPU
    python benchmarks/finetune.py --model-dir DIR       # any ``CLIPModel.from_pretrained`` directory of the world

A copy of the model is fine-tuned on multi-object scenes (2 or 3 objects) with
:class:`captum_gradeclip.finetune.RegionPhraseFinetuner`: the usual CLIP loss plus the region-phrase loss on
Grad-ECLIP-weighted pools of dense value-path features. Reported before and after, on held-out scenes:

- region accuracy: each object's region (its mask, and its box) pools the dense value-path features, and
  the pooled embedding is classified among all colour x shape prompts;
- global recall@5 (and @1): image-to-caption retrieval of 2-object scenes among 100 captions
  (:func:`captum_gradeclip.zoo.quality.evaluate`);
- single-object zero-shot top-1 among all colour x shape prompts, for information.

Target: region accuracy +10 points, recall@5 down by at most 2 points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg
from captum_gradeclip.finetune import RegionPhraseFinetuner, region_zero_shot
from captum_gradeclip.zoo import quality, shapes
from captum_gradeclip.zoo import train_shapes as ts

from _pages import without_options

EVAL_SEED = 3_000_000  # held out: training draws from one seeded stream, quality.py from 1e6 and 2e6


def load(model_dir: Path | None) -> tuple[torch.nn.Module, object]:
    """The shipped ShapesCLIP, or a ``from_pretrained`` directory."""
    if model_dir is None:
        return cg.zoo.load_shapes_clip()
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(model_dir)


def eval_set(processor: object, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out scenes with 2 or 3 objects: pixels, masks, boxes ``(N, 3, H, W)`` and labels ``(N, 3)``."""
    prompts = shapes.all_prompts()
    scenes = [shapes.make_scene(EVAL_SEED + i, n_objects=2 + i % 2) for i in range(n)]
    pixels = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    size = shapes.IMAGE_SIZE
    masks = torch.zeros(n, shapes.MAX_OBJECTS, size, size, dtype=torch.bool)
    boxes = torch.zeros_like(masks)
    labels = torch.full((n, shapes.MAX_OBJECTS), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for k, obj in enumerate(scene.objects):
            masks[i, k] = torch.from_numpy(obj.mask)
            x0, y0, x1, y1 = obj.box
            boxes[i, k, y0:y1, x0:x1] = True
            labels[i, k] = prompts.index(obj.prompt)
    return pixels, masks, boxes, labels


def measure(model: torch.nn.Module, processor: object, data: tuple, n_pair: int) -> dict[str, float]:
    """Region accuracy (mask and box) and global recall@5 of ``model``."""
    pixels, masks, boxes, labels = data
    sim = cg.ImageTextSimilarity(model.eval(), shapes.all_prompts(), processor=processor)
    global_quality = quality.evaluate(model, processor, n_single=48, n_pair=n_pair, pointing=False)
    hits = []
    for start in range(quality.PAIR_SEED, quality.PAIR_SEED + n_pair, 100):  # the same groups of 100 as recall@5
        group = shapes.make_scenes(range(start, start + 100), n_objects=2)
        captions = cg.ImageTextSimilarity(model, [s.caption for s in group], processor=processor)
        with torch.no_grad():
            best = captions(processor(images=[s.image for s in group], return_tensors="pt")["pixel_values"]).argmax(-1)  # type: ignore[operator]
        hits += (best == torch.arange(100)).tolist()
    return {
        "region_acc_mask": float(region_zero_shot(sim, pixels, masks, labels).float().mean()),
        "region_acc_box": float(region_zero_shot(sim, pixels, boxes, labels).float().mean()),
        "recall_at_5": global_quality["pair_recall_at_5"],
        "recall_at_1": float(np.mean(hits)),
        "zero_shot_top1": global_quality["zero_shot_top1"],
    }


def batches(seed: int, batch_size: int):
    """An endless seeded stream of normalised multi-object scenes and their captions."""
    rng = np.random.default_rng(seed)
    while True:
        images, captions = [], []
        for _ in range(batch_size):
            array, objects = shapes.render(rng, int(rng.integers(2, shapes.MAX_OBJECTS + 1)))
            images.append(array)
            captions.append(shapes.caption([(o.colour, o.shape) for o in objects]))
        yield ts.normalise(np.stack(images)), captions


def main(argv: list[str] | None = None) -> dict:
    hf_logging.set_verbosity_error()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the shipped ShapesCLIP")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--region-weight", type=float, default=1.0)
    parser.add_argument("--ema", type=float, default=0.99, help="EMA teacher decay; 0 draws maps with the student")
    parser.add_argument("--eval-scenes", type=int, default=300)
    parser.add_argument("--eval-pairs", type=int, default=500, help="2-object scenes for recall@5, multiple of 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--write", type=Path, default=None, help="also write the table to this markdown page")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2:
        parser.error("--steps must be at least 1 and --batch-size at least 2")

    torch.manual_seed(args.seed)
    model, processor = load(args.model_dir)
    data = eval_set(processor, args.eval_scenes)
    before = measure(model, processor, data, args.eval_pairs)
    ema = args.ema or None
    tuner = RegionPhraseFinetuner(model, processor, lr=args.lr, region_weight=args.region_weight, ema=ema)
    start = time.perf_counter()
    stream = batches(args.seed, args.batch_size)
    bar = tqdm(range(args.steps), desc="fine-tune", file=sys.stderr, mininterval=5)
    for _ in bar:
        result = tuner.step(*next(stream))
        bar.set_postfix(clip=f"{result.clip:.3f}", region=f"{result.region:.3f}", refresh=False)
    minutes = (time.perf_counter() - start) / 60
    after = measure(tuner.model, processor, data, args.eval_pairs)
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("model_dir", "json", "write")}}
    report.update({"train_minutes": round(minutes, 2), "before": before, "after": after})
    gain = 100 * (after["region_acc_mask"] - before["region_acc_mask"])
    drop = 100 * (before["recall_at_5"] - after["recall_at_5"])
    report["region_gain_points"], report["recall_drop_points"] = round(gain, 2), round(drop, 2)
    report["target_met"] = bool(gain >= 10 and drop <= 2)
    print(f"{'':18}{'before':>9}{'after':>9}")
    for key in before:
        print(f"{key:18}{100 * before[key]:9.1f}{100 * after[key]:9.1f}")
    print(f"region gain {gain:+.1f} points, recall@5 change {-drop:+.1f} points, target met: {report['target_met']}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    if args.write is not None:
        args.write.write_text(markdown(report, argv if argv is not None else sys.argv[1:]))
    return report


def markdown(report: dict, argv: list[str]) -> str:
    """The docs page of one run: settings, the before/after table and the verdict."""
    names = {
        "region_acc_mask": "region zero-shot accuracy, object masks",
        "region_acc_box": "region zero-shot accuracy, object boxes",
        "recall_at_5": "image-to-text recall@5 among 100 captions",
        "recall_at_1": "image-to-text recall@1 among 100 captions",
        "zero_shot_top1": "single-object zero-shot top-1",
    }
    settings = ", ".join(f"{k}={v}" for k, v in report["settings"].items())
    shown = without_options(argv, "--json")  # where the raw numbers went is no part of the result
    lines = [
        "# Region-phrase fine-tuning of ShapesCLIP",
        "",
        "Generated by `python benchmarks/finetune.py --write docs/finetune.md`; do not edit by hand.",
        "",
        f"Command: `python benchmarks/finetune.py {' '.join(shown)}`. Settings: {settings}. "
        f"Fine-tuning took {report['train_minutes']:.1f} minutes of wall time on the CPU.",
        "",
        "| measure (held-out scenes) | before | after | change |",
        "|---|---:|---:|---:|",
    ]
    for key, name in names.items():
        before, after = 100 * report["before"][key], 100 * report["after"][key]
        lines.append(f"| {name} | {before:.1f} | {after:.1f} | {after - before:+.1f} |")
    verdict = "met" if report["target_met"] else "not met"
    lines += [
        "",
        f"Target (region accuracy +10 points, recall@5 down by at most 2): **{verdict}** "
        f"({report['region_gain_points']:+.1f} points region accuracy on masks, recall@5 "
        f"{-report['recall_drop_points']:+.1f} points).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
