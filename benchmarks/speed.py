"""Speed and memory of Grad-ECLIP, as ratios to plain forward passes, measured side by side in one run.

    python -m benchmarks.speed                       # ViT-B/16 architecture, random init, CPU, 2 threads
    python -m benchmarks.speed --model tiny --prompts 20 --captions 20 --images 4   # a smoke run
    python -m benchmarks.speed --device cuda --dtype bf16

Every row times our explanation and its reference (a no-grad forward of the same inputs) in the same process,
with a warm-up and the median of ``--repeats`` runs, threads fixed. The naive rows run the same case the slow way:
one full forward and backward per (image, text) pair at batch size 1, as the official code does (timed on a few
pairs and scaled to the case), and Captum's ``LayerGradCam`` on the same wrapper. Peak memory is measured in a
fresh subprocess per measurement: the rise of the peak RSS (CPU) or of the allocator's peak (CUDA) over the
loaded model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging as hf_logging

import captum_gradeclip as cg
from benchmarks._pages import write_section
from captum_gradeclip.baselines import GAME

hf_logging.set_verbosity_error()

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGETS = {"prompts": 1.3, "batch": 1.1, "memory": 1.2, "text": 3.0, "curves": 1.2}


@dataclass
class Bench:
    """A model to benchmark and what the cases need to know of it."""

    model: torch.nn.Module
    image_size: int
    embed_dim: int
    vocab: int
    bos: int
    eos: int  # for open_clip/OpenAI the highest id, where the text pools
    pad: int
    gradcam_layer: torch.nn.Module  # a module with a (N, T, C) or (N, C, H, W) tensor output, for LayerGradCam
    context: int | None = None  # fixed text length (open_clip pads every text to it)


def build(name: str, device: str, dtype: torch.dtype) -> Bench:
    """A randomly initialised model of the named architecture (no download)."""
    torch.manual_seed(0)
    if name.startswith("open_clip:"):
        import open_clip

        model = open_clip.create_model(name.split(":", 1)[1], pretrained=None)
        visual = model.visual
        size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
        layer = visual.layer4 if hasattr(visual, "layer4") else visual.transformer.resblocks[-1]
        bench = Bench(model, size, model.text_projection.shape[-1], model.vocab_size, 49406, model.vocab_size - 1, 0,
                      layer, model.context_length)  # fmt: skip
    elif name in HF_ARCHS:
        vision, text, projection = HF_ARCHS[name]
        text = {**text, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
        model = CLIPModel._from_config(config, attn_implementation="sdpa")
        bench = Bench(model, vision["image_size"], projection, text["vocab_size"], 0, 2, 1,
                      model.vision_model.encoder.layers[-1])  # fmt: skip
    else:
        raise SystemExit(f"--model must be one of {sorted(HF_ARCHS)} or open_clip:ARCH; got {name!r}")
    bench.model = bench.model.to(device=device, dtype=dtype).eval()
    return bench


HF_ARCHS = {
    "vit-b-16": (
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
             patch_size=16),
        dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
             max_position_embeddings=77, vocab_size=49408),
        512,
    ),
    "tiny": (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64,
             patch_size=16),
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=32, vocab_size=1000),
        32,
    ),
}  # fmt: skip


def captions(n: int, length: int, bench: Bench, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` token sequences of 5 to ``length`` tokens (BOS, words, EOS), padded to the longest."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, length + 1, (n,), generator=g)
    ids = torch.full((n, bench.context or int(lengths.max())), bench.pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n_tok in enumerate(lengths.tolist()):
        ids[i, 0] = bench.bos
        ids[i, 1 : n_tok - 1] = torch.randint(3, min(bench.vocab - 3, 40000), (n_tok - 2,), generator=g)
        ids[i, n_tok - 1] = bench.eos
        mask[i, :n_tok] = 1
    return ids.to(device), mask.to(device)


def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run under ``torch.no_grad()``: the plain forward every ratio is measured against."""

    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


def median_time(fn: Callable[[], object], repeats: int, device: str, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_pair(sim: cg.ImageTextSimilarity, pixels: torch.Tensor, j: int) -> torch.Tensor:
    """The official code's way: a full forward with grad, then one backward, for one (image, text) pair."""
    block = sim.explained_blocks()[-1]
    with torch.enable_grad(), sim.adapter.probe(block, lambda _record, o: o) as record:
        score = sim(pixels)[0, j]
    return torch.autograd.grad(score, record.o)[0]


def peak_memory(args: argparse.Namespace, what: str) -> float:
    """Peak memory rise (MiB) of one measurement, in a fresh process."""
    cmd = [sys.executable, "-m", "benchmarks.speed", "--_memory", what, "--model", args.model,
           "--device", args.device, "--dtype", args.dtype, "--images", str(args.images),
           "--threads", str(args.threads)]  # fmt: skip
    root = Path(__file__).resolve().parents[1]  # where `benchmarks` is a package
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root).stdout
    return json.loads(out.strip().splitlines()[-1])["mib"]


def _rss(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak since the last reset) of this process, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(args: argparse.Namespace) -> None:
    dtype = DTYPES[args.dtype]
    bench = build(args.model, args.device, dtype)
    size = bench.image_size
    pixels = torch.randn(args.images, 3, size, size, device=args.device, dtype=dtype)
    sim = cg.ImageTextSimilarity(bench.model, text_embeds=torch.randn(1, bench.embed_dim, dtype=dtype))
    sim.to(args.device)
    explainer = cg.GradECLIP(sim)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM) to the current RSS
        base = _rss("VmRSS")
    if args._memory == "forward":
        with torch.no_grad():
            sim(pixels)
    else:
        explainer.attribute(pixels, target=0)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _rss("VmHWM")
    print(json.dumps({"mib": (peak - base) / 2**20}))


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    bench = build(args.model, args.device, dtype)
    model, size, dim = bench.model, bench.image_size, bench.embed_dim
    g = torch.Generator().manual_seed(0)
    rows: list[dict] = []

    def row(case: str, method: str, ours: float, ref: float, target: float | None, note: str = "") -> None:
        rows.append(dict(case=case, method=method, ours=ours, ref=ref, ratio=ours / ref, target=target, note=note))
        print(f"[speed] {case} | {method}: {ours:.3f} / {ref:.3f} = {ours / ref:.2f}", file=sys.stderr, flush=True)

    # 1. one image against many prompts
    one = torch.randn(1, 3, size, size, generator=g).to(args.device, dtype)
    prompts = cg.ImageTextSimilarity(model, text_embeds=torch.randn(args.prompts, dim, generator=g).to(dtype))
    prompts.to(args.device)
    case = f"1 image x {args.prompts} prompts"
    forward = median_time(no_grad(lambda: prompts(one)), args.repeats, args.device)
    for mode in ("native", "paper"):
        explainer = cg.GradECLIP(prompts, mode=mode)
        ours = median_time(lambda explainer=explainer: explainer.attribute(one), args.repeats, args.device)
        row(case, f"Grad-ECLIP {mode}", ours, forward, TARGETS["prompts"])
    pairs = min(args.naive_pairs, args.prompts)
    naive = median_time(lambda: [naive_pair(prompts, one, j) for j in range(pairs)], 1, args.device)
    row(case, "naive per-pair autograd", naive * args.prompts / pairs, forward, None, f"scaled from {pairs} pairs")
    gradcam = LayerGradCam(prompts, bench.gradcam_layer)
    naive = median_time(lambda: [gradcam.attribute(one, target=j) for j in range(pairs)], 1, args.device)
    row(case, "captum LayerGradCam", naive * args.prompts / pairs, forward, None, f"scaled from {pairs} targets")
    if not prompts.adapter.attention_pool("image"):  # GAME needs self-attention, not a pooling block
        game = GAME(prompts, layers=1)
        naive = median_time(lambda: [game.attribute(one, target=j) for j in range(pairs)], 1, args.device)
        row(case, "GAME (last block)", naive * args.prompts / pairs, forward, None, f"scaled from {pairs} targets")

    # 2. a batch of images, one text each
    batch = torch.randn(args.images, 3, size, size, generator=g).to(args.device, dtype)
    single = cg.ImageTextSimilarity(model, text_embeds=torch.randn(1, dim, generator=g).to(dtype)).to(args.device)
    case = f"{args.images} images x 1 text"
    forward = median_time(no_grad(lambda: single(batch)), args.repeats, args.device)
    for mode in ("native", "paper"):
        explainer = cg.GradECLIP(single, mode=mode)
        ours = median_time(lambda explainer=explainer: explainer.attribute(batch, target=0), args.repeats, args.device)
        rate = f"{args.images / ours:,.0f} images/s explained, {args.images / forward:,.0f} forward"
        row(case, f"Grad-ECLIP {mode}", ours, forward, TARGETS["batch"], rate)
    gradcam = LayerGradCam(single, bench.gradcam_layer)
    row(case, "captum LayerGradCam", median_time(lambda: gradcam.attribute(batch, target=0), args.repeats,
        args.device), forward, None)  # fmt: skip

    # 3. peak memory of case 2
    if not args.no_memory:
        ours, ref = peak_memory(args, "explain"), peak_memory(args, "forward")
        rows.append(dict(case=f"peak memory, {args.images} images", method="Grad-ECLIP native", ours=ours, ref=ref,
                         ratio=ours / ref, target=TARGETS["memory"], note="MiB over the loaded model"))  # fmt: skip

    # 4. many captions against one image, text maps over 8 blocks
    ids, mask = captions(args.captions, 20, bench, args.device)
    texts = cg.TextImageSimilarity(model, image_embeds=torch.randn(1, dim, generator=g).to(dtype)).to(args.device)
    case = f"{args.captions} captions x 1 image, {len(cg.GradECLIP(texts).blocks)} text blocks"
    forward = median_time(no_grad(lambda: texts(ids, mask)), args.repeats, args.device)
    explainer = cg.GradECLIP(texts)
    ours = median_time(lambda: explainer.attribute(ids, target=0, additional_forward_args=(mask,)), args.repeats,
                       args.device)  # fmt: skip
    row(case, "Grad-ECLIP native", ours, forward, TARGETS["text"])

    # 5. deletion + insertion curves, all steps batched
    if args.metric_images:
        from captum_gradeclip.metrics import image_deletion, image_insertion

        images = torch.randn(args.metric_images, 3, size, size, generator=g).to(args.device, dtype)
        maps = cg.GradECLIP(single).attribute(images, target=0)
        steps = args.steps
        perturbed = images.repeat_interleave(steps + 1, dim=0)  # as many images as both curves score, per curve
        reference = no_grad(lambda: [single(b) for b in perturbed.split(256)])
        forward = median_time(reference, args.metric_repeats, args.device, warmup=False)

        def curves() -> None:
            image_deletion(single, images, maps, target=0, steps=steps)
            image_insertion(single, images, maps, target=0, steps=steps)

        ours = median_time(curves, args.metric_repeats, args.device, warmup=False)
        note = (f"reference: 2 x {args.metric_images} x {steps + 1} images, no-grad, batches of 256; "
                f"median of {args.metric_repeats}, no warm-up")  # fmt: skip
        row(f"deletion + insertion, {args.metric_images} images, {steps} steps", "metrics", ours, 2 * forward,
            TARGETS["curves"], note)  # fmt: skip
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"model `{args.model}`, device `{args.device}`, dtype `{args.dtype}`, {args.threads} threads, "
            f"median of {args.repeats}\n\n")  # fmt: skip
    lines = ["| case | method | ours | reference | ratio | target | |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "MiB" if "memory" in r["case"] else "s"
        verdict = "" if r["target"] is None else ("met" if r["ratio"] <= r["target"] else "**missed**")
        target = "" if r["target"] is None else f"<= {r['target']}"
        lines.append(f"| {r['case']} | {r['method']} | {r['ours']:.3f} {unit} | {r['ref']:.3f} {unit} | "
                     f"{r['ratio']:.2f} | {target} | {verdict} {r['note']} |")  # fmt: skip
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-b-16", help="vit-b-16 | tiny (HF CLIP) | open_clip:ARCH (e.g. RN50)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--metric-images", type=int, default=64, help="images for the deletion/insertion row")
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    parser.add_argument("--metric-repeats", type=int, default=1, help="runs of the (long) deletion/insertion row")
    parser.add_argument("--naive-pairs", type=int, default=3, help="pairs timed for the naive rows")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--_memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory:
        torch.set_num_threads(args.threads)
        _memory_child(args)
        return
    text = table(run(args), args)
    print(text)
    if args.write:
        command = " ".join(["python", "-m", "benchmarks.speed", *(sys.argv[1:] if argv is None else argv)])
        body = f"## `{args.model}` on {args.device}, {args.dtype}\n\n`{command}`\n\n{text.strip()}"
        write_section(args.write, "speed.py", INTRO, f"{args.model} {args.device} {args.dtype}", body)


INTRO = (
    "# Speed benchmark\n\nGenerated by `python -m benchmarks.speed --write docs/speed.md` (one section per model, "
    "device and dtype); do not edit by hand. Ratios are measured side by side in one run.\n"
)


if __name__ == "__main__":
    main()
