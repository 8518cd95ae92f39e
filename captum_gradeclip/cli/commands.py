"""The command line's parsers and help texts, kept free of heavy imports so that ``--help`` answers at once.

``captum-gradeclip --help``, ``--version`` and ``captum-gradeclip COMMAND --help`` import only this module (and
``argparse``); the commands import torch, transformers and matplotlib when they run. Every error a command
reports goes through :func:`fail`: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

from captum_gradeclip.images import DEFAULT_MAX_PIXELS  # light: images imports PIL and numpy only when it reads

PROG = "captum-gradeclip"
MODEL_SPECS = "shapes | hf:NAME_OR_PATH | open_clip:ARCH[:PRETRAINED] | openai:NAME"
#: ``--dtype`` choices (torch dtypes of the same names).
DTYPE_NAMES = ("float32", "bfloat16", "float16")
MODEL_HELP = (
    f"the model: {MODEL_SPECS}. shapes (the default) is ShapesCLIP, a small CLIP that ships with the package and "
    "runs offline, but knows only its world of coloured shapes (6 colours, 4 shapes); shapes:resnet is its ResNet "
    "twin, shapes:deep its 6-layer ViT with a 14x14 grid. For photos use a real CLIP: "
    "hf:openai/clip-vit-base-patch16 (the Hugging Face hub or a local folder), "
    "open_clip:ViT-B-16:openai or openai:RN50 (the openclip / openai extras)"
)
MODE_HELP = "native (default): Grad-ECLIP as adapted to each model; paper: exactly as in the Grad-ECLIP paper"
#: Static (``--help`` imports no torch, so it cannot read the registry); ``explain`` checks the name when it runs.
METHOD_HELP = (
    "the explanation method, by its name or the start of it, any case and punctuation: Grad-ECLIP (default), "
    "Raw attention, Rollout, GAME, Grad-CAM, MaskCLIP, CLIP Surgery, RISE, M2IB (the list of "
    "captum_gradeclip.methods; an unknown name lists them). MaskCLIP, CLIP Surgery and RISE explain the image only: "
    "no word importances then"
)
DTYPE_HELP = "the model's precision: float32 (default), bfloat16 or float16"
DEVICE_HELP = "where the model runs: cpu (default), cuda, cuda:1, ..."

#: Each command: its one-line summary, what it does (for its --help), an example.
COMMANDS = {
    "demo": (
        "explain a few built-in scenes offline and write a report (start here)",
        "Explain a few scenes of coloured shapes with the embedded ShapesCLIP, offline, in about a minute. For each "
        "scene it draws a heat map of where each object's name matches the image, and for the whole caption, "
        "colours each word by how much it counts, prints whether each map points at its object, and writes one "
        "figure per scene (scene_K.png) and a report (index.html) to --out.",
        "captum-gradeclip demo --out gradeclip_demo   # then open gradeclip_demo/index.html",
    ),
    "explain": (
        "explain one image against one or more texts",
        "Explain why an image matches each of several texts: a heat map per text over the image, and how much each "
        "word of each text counts. Prints every text's score (* marks the best, none when the best scores tie) and "
        "its word importances, warns on stderr about words the model does not know, and writes one figure with "
        "every text side by side (explanation.png) and a report (index.html) to --out.",
        "captum-gradeclip explain photo.jpg 'a dog' 'a cat' --model hf:openai/clip-vit-base-patch16",
    ),
    "explain-dataset": (
        "explain every image-text pair of a CSV/JSONL file into a resumable result store",
        "Explain every row of a CSV (with a header) or JSONL file of image,text pairs, or of image,label rows with "
        "--templates for zero-shot classification, and write the maps, scores and word scores to a result store "
        "in --out (read it back with captum_gradeclip.results.open). Run it again after an interruption and it "
        "continues where it stopped; unreadable images and bad rows become error rows. Under torchrun the work "
        "is shared between processes.",
        "captum-gradeclip explain-dataset --images photos/ --pairs pairs.csv --out results/\n"
        "  torchrun --nproc_per_node=2 -m captum_gradeclip explain-dataset --images photos/ --pairs pairs.csv "
        "--out results/",
    ),
}


class CLIError(Exception):
    """An error the CLI reports as one line, with exit status 2."""


def fail(error: BaseException | str, prog: str = PROG) -> NoReturn:
    """Reports ``error`` as one line on stderr, ``PROG: error: MESSAGE`` (control characters written out), and
    exits with status 2, without a traceback: the one error path of every command."""
    from captum_gradeclip.images import printable

    print(f"{prog}: error: {printable(error)}", file=sys.stderr)
    raise SystemExit(2) from None


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` that raises :class:`CLIError` (one line) instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message} (see --help)")


def _parser(command: str) -> ArgumentParser:
    _, description, example = COMMANDS[command]
    return ArgumentParser(
        prog=f"{PROG} {command}",
        description=textwrap.fill(description, 79),
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def demo_parser() -> ArgumentParser:
    """The parser of ``captum-gradeclip demo``."""
    parser = _parser("demo")
    parser.add_argument(
        "--out", type=Path, default=Path("gradeclip_demo"), help="folder for the figures and index.html "
        "(default: gradeclip_demo)"
    )  # fmt: skip
    parser.add_argument("--mode", choices=["native", "paper"], default="native", help=MODE_HELP)
    parser.add_argument(
        "--model", default="shapes", help="shapes (default: the ViT ShapesCLIP), shapes:resnet (its ResNet twin; "
        "needs the openclip extra) or shapes:deep (ShapesCLIP-Deep: 6 layers, a 14x14 grid)"
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    return parser


def explain_parser() -> ArgumentParser:
    """The parser of ``captum-gradeclip explain``."""
    parser = _parser("explain")
    parser.add_argument("image", type=Path, help="the image file (PNG, JPEG, ...)")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts to explain the image against")
    parser.add_argument("--model", default="shapes", help=MODEL_HELP)
    parser.add_argument("--method", metavar="NAME", help=METHOD_HELP)
    parser.add_argument("--mode", choices=["native", "paper"], default="native", help=MODE_HELP)
    parser.add_argument(
        "--score", choices=["cosine", "logit", "softmax"], default="cosine",
        help="what the heat maps explain: cosine similarity (default), the model's logit, or softmax: each "
        "text's probability among the texts given (needs two or more texts)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("gradeclip_explain"),
        help="folder for explanation.png and index.html (default: gradeclip_explain)",
    )  # fmt: skip
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help=DTYPE_HELP)
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    return parser


def explain_dataset_parser() -> ArgumentParser:
    """The parser of ``captum-gradeclip explain-dataset``."""
    parser = _parser("explain-dataset")
    parser.add_argument("--images", type=Path, required=True, help="the folder that the image paths are relative to")
    parser.add_argument(
        "--pairs", type=Path, required=True, help="a CSV (with a header) or JSONL file of image,text rows, or of "
        "image,label rows with --templates"
    )  # fmt: skip
    parser.add_argument(
        "--out", required=True, help="the result store's folder (created, or resumed), or the URL of one on "
        "another filesystem that fsspec knows (s3://bucket/results, memory://results)"
    )  # fmt: skip
    parser.add_argument("--model", default="shapes", help=MODEL_HELP)
    parser.add_argument("--method", metavar="NAME", help=METHOD_HELP)
    parser.add_argument("--mode", default="native", choices=["native", "paper"], help=MODE_HELP)
    parser.add_argument(
        "--templates", nargs="+", metavar="TEMPLATE", help="zero-shot: prompt templates with {} for the label, "
        "e.g. 'a photo of a {}'; the map explains the label's prompt among all labels' prompts"
    )  # fmt: skip
    parser.add_argument(
        "--column", choices=["text", "label"], help="which column the rows explain, needed when the pairs file has "
        "both a text and a label column: text (each image against its text) or label (zero-shot, with --templates)"
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32, help="items per model call (default: 32)")
    parser.add_argument(
        "--chunk-size", type=int, default=256, help="items per stored shard, the unit of resuming (default: 256)"
    )
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help=DTYPE_HELP)
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="the most pixels (width x height) an image may "
        f"have; larger images become error rows (default: {DEFAULT_MAX_PIXELS:_})"
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true", help="discard the store in --out (a run with other inputs or settings: its "
        "own parts only; a folder that is not a result store is refused) and start again"
    )  # fmt: skip
    return parser


PARSERS = {"demo": demo_parser, "explain": explain_parser, "explain-dataset": explain_dataset_parser}


def main_parser(version: str) -> argparse.ArgumentParser:
    """The top-level parser: ``--help`` lists every command with what it does; ``--version``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Grad-ECLIP explanations of CLIP: heat maps of where an image matches a text, and which words "
        "of the text count. Runs offline on the embedded ShapesCLIP, or on a real CLIP (--model).",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options. Start with '{PROG} demo'.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (summary, description, _) in COMMANDS.items():
        commands.add_parser(name, help=summary, description=description, add_help=False)
    return parser
