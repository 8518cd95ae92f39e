"""Which words ShapesCLIP relies on: Grad-ECLIP word importance per word class, and present vs absent objects.

    python -m benchmarks.word_importance                      # the shipped ShapesCLIP
    python -m benchmarks.word_importance --model-dir DIR --out results/   # any from_pretrained directory

Two corpora of held-out scenes:

- true captions: the importance share of each word class (colour, shape, determiner, conjunction,
  punctuation), aggregated with :func:`captum_gradeclip.analysis.analyze_words`;
- captions with one object replaced by an absent one: the share of the absent object's words against the
  present objects' words (explicit tags through the same aggregation).

Writes ``words.csv``, ``absent.csv`` and ``words.png`` (bar plots) to ``--out`` and prints the margins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg
from captum_gradeclip.analysis import aggregate, analyze_words, word_importances
from captum_gradeclip.finetune import shapes_noun_phrases
from captum_gradeclip.zoo import shapes

SEED = 4_000_000  # held out from training and from the other benchmarks


def presence_tags(scene: shapes.Scene, caption: str, words: list[str]) -> list[str]:
    """Tags ``words`` of ``caption``: ``present`` / ``absent`` object words, ``determiner``, ``separator``."""
    tags: list[str] = []
    for phrase in shapes_noun_phrases(caption):
        label = "present" if phrase in scene.prompts else "absent"
        tags += ["determiner"] + [label] * (len(phrase.split()) - 1)
    spans = iter(tags)
    return ["separator" if w in (",", "and") else next(spans) for w in words]


def main(argv: list[str] | None = None) -> dict:
    hf_logging.set_verbosity_error()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the shipped ShapesCLIP")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("word_importance"))
    parser.add_argument("--write", type=Path, default=None, help="also write the tables to this markdown page")
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default) or cuda")
    args = parser.parse_args(argv)
    if args.scenes < 2:
        parser.error("--scenes must be at least 2")
    if args.model_dir is None:
        model, processor = cg.zoo.load_shapes_clip(device=args.device)
    else:
        from transformers import CLIPModel, CLIPProcessor

        model, processor = (
            CLIPModel.from_pretrained(args.model_dir).to(args.device).eval(),
            CLIPProcessor.from_pretrained(args.model_dir),
        )
    args.out.mkdir(parents=True, exist_ok=True)

    scenes = shapes.make_scenes(range(SEED, SEED + args.scenes))
    table = analyze_words(model, processor, [s.image for s in scenes], [s.caption for s in scenes])
    multi = [s for s in scenes if len(s.objects) > 1]
    captions = [s.absent_caption(i) for i, s in enumerate(multi)]
    records = word_importances(model, processor, [s.image for s in multi], captions)
    tags = [presence_tags(s, c, [w for w, _ in r]) for s, c, r in zip(multi, captions, records, strict=True)]
    absent = aggregate(records, tags=tags)

    table.to_csv(args.out / "words.csv")
    absent.to_csv(args.out / "absent.csv")
    fig = Figure(figsize=(15, 3.8))
    axes = fig.subplots(1, 3)
    table.plot("tag", ax=axes[0])
    table.plot("word", ax=axes[1])
    absent.plot("tag", ax=axes[2])
    axes[2].set_title("captions with an absent object")
    fig.tight_layout()
    fig.savefig(args.out / "words.png", dpi=100)

    by_tag = {k: v["mean"] for k, v in table.by_tag.items()}
    presence = {k: v["mean"] for k, v in absent.by_tag.items()}
    content = min(by_tag["colour"], by_tag["shape"])
    function = max(by_tag.get("determiner", 0.0), by_tag.get("conjunction", 0.0))
    report = {
        "scenes": args.scenes,
        "mean_share_by_tag": by_tag,
        "mean_share_present_vs_absent": presence,
        "content_minus_function": content - function,
        "present_minus_absent": presence["present"] - presence["absent"],
    }
    for key, value in sorted(by_tag.items(), key=lambda kv: -kv[1]):
        print(f"{key:14}{value:8.3f}")
    print(f"present object words {presence['present']:.3f}, absent object words {presence['absent']:.3f}")
    (args.out / "summary.json").write_text(json.dumps(report, indent=2))
    if args.write is not None:
        args.write.write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    """The docs page of one run: the mean importance share per word class, and present vs absent objects."""
    presence = report["mean_share_present_vs_absent"]
    lines = [
        "# Word importance in ShapesCLIP",
        "",
        "Generated by `python -m benchmarks.word_importance --write docs/word_importance.md`; do not edit by hand.",
        "",
        f"Grad-ECLIP word importances of {report['scenes']} held-out scenes' captions, each word's share of its "
        "caption's total, averaged per word class.",
        "",
        "| word class | mean share |",
        "|---|---:|",
        *(f"| {k} | {v:.3f} |" for k, v in sorted(report["mean_share_by_tag"].items(), key=lambda kv: -kv[1])),
        "",
        "Captions of the multi-object scenes with one object replaced by an absent one:",
        "",
        "| words | mean share |",
        "|---|---:|",
        *(f"| {k} | {v:.3f} |" for k, v in sorted(presence.items(), key=lambda kv: -kv[1])),
        "",
        f"Colour and shape words lead function words by {report['content_minus_function']:.3f}; present objects' "
        f"words lead the absent object's by {report['present_minus_absent']:.3f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
