"""A CPU proxy for the GPU's host-bound regime: time and dispatched aten ops, explanation against forward.

    python -m benchmarks.dispatch
    python -m benchmarks.dispatch --write docs/speed.md

On a GPU, Grad-ECLIP's kernels take about as long as the forward's; what costs is the host issuing more, smaller
ops (see the speed page). On a tiny model (12 ViT layers of width 64, one thread) every op is dispatch-bound on the
CPU too, so the ratio of times and the ratio of aten ops dispatched (counted with ``torch.profiler``, every aten
event including nested ones) measure that overhead without a GPU. Both are measured side by side in one run, for
32 images x 1 text and 1 image x 1000 prompts: the median of ``--repeats`` ratios of back-to-back runs after a
warm-up (CPU time of the process, so that other work on the machine blurs the ratio less).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg

hf_logging.set_verbosity_error()


def tiny_deep_clip(layers: int = 12, width: int = 64, image_size: int = 64, patch: int = 8) -> CLIPModel:
    """A randomly initialised HF CLIP with many thin layers: every op costs its dispatch, not its arithmetic."""
    torch.manual_seed(0)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
                  image_size=image_size, patch_size=patch)  # fmt: skip
    text = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
                max_position_embeddings=32, vocab_size=1000, bos_token_id=0, pad_token_id=1,
                eos_token_id=2)  # fmt: skip
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    return CLIPModel._from_config(config, attn_implementation="sdpa").eval()


def paired_ratio(fn: Callable[[], object], reference: Callable[[], object], repeats: int) -> float:
    """Median over ``repeats`` of the time of ``fn`` over that of ``reference``, each pair run back to back.

    Times are CPU times of this process (one thread: the wall time of an idle machine); pairing keeps a busy
    machine's slow phases out of the ratio.
    """
    fn(), reference()
    ratios = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        middle = time.process_time()
        reference()
        ratios.append((middle - start) / (time.process_time() - middle))
    return statistics.median(ratios)


def aten_ops(fn: Callable[[], object]) -> int:
    """The number of aten ops one call dispatches (nested ones included)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    model = tiny_deep_clip()
    size = model.config.vision_config.image_size
    dim = model.config.projection_dim
    g = torch.Generator().manual_seed(0)
    cases = {
        f"{args.images} images x 1 text": (
            torch.randn(args.images, 3, size, size, generator=g),
            torch.randn(1, dim, generator=g),
            0,
        ),
        f"1 image x {args.prompts} prompts": (
            torch.randn(1, 3, size, size, generator=g),
            torch.randn(args.prompts, dim, generator=g),
            None,
        ),
    }
    rows = []
    for case, (pixels, text_embeds, target) in cases.items():
        sim = cg.ImageTextSimilarity(model, text_embeds=text_embeds)

        def forward(sim: cg.ImageTextSimilarity = sim, pixels: torch.Tensor = pixels) -> object:
            with torch.no_grad():
                return sim(pixels)

        for mode in ("native", "paper"):
            explainer = cg.GradECLIP(sim, mode=mode)

            def explain(explainer: cg.GradECLIP = explainer, pixels: torch.Tensor = pixels, target=target) -> object:
                return explainer.attribute(pixels, target=target)

            ratio = paired_ratio(explain, forward, args.repeats)
            ops, ref_ops = aten_ops(explain), aten_ops(forward)
            rows.append(dict(case=case, mode=mode, time=ratio, ops=ops / ref_ops, n_ops=ops, n_ref=ref_ops))
            print(f"[dispatch] {case} {mode}: time {ratio:.2f}, ops {ops}/{ref_ops}", file=sys.stderr)
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"tiny HF CLIP, 12 ViT layers of width 64, CPU, 1 thread, median of {args.repeats}; aten ops counted with "
            "torch.profiler (nested included)\n\n")  # fmt: skip
    lines = ["| case | mode | time / forward | aten ops / forward | ops (explanation / forward) |"]
    lines.append("|---|---|---|---|---|")
    for r in rows:
        lines.append(f"| {r['case']} | {r['mode']} | {r['time']:.2f} | {r['ops']:.2f} | {r['n_ops']} / {r['n_ref']} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--write", type=Path, help="also write the table as a section of this markdown page")
    args = parser.parse_args(argv)
    text = table(run(args), args)
    print(text)
    if args.write:
        from _pages import write_section

        command = " ".join(["python", "-m", "benchmarks.dispatch", *(sys.argv[1:] if argv is None else argv)])
        body = f"## Dispatch proxy (CPU, 1 thread)\n\n`{command}`\n\n{text.strip()}"
        write_section(args.write, "dispatch.py", INTRO, "dispatch proxy", body)


INTRO = (
    "# Speed benchmark\n\nGenerated by `python -m benchmarks.speed --write docs/speed.md` (one section per model, "
    "device and dtype); do not edit by hand. Ratios are measured side by side in one run.\n"
)


if __name__ == "__main__":
    main()
