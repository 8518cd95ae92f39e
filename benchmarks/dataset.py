"""Items per second of ``explain-dataset`` on the shapes world: 1 process against ``torchrun`` with 2.

    python -m benchmarks.dataset [--items 1024] [--model shapes] [--write docs/dataset_speed.md]

Writes a folder of held-out ShapesCLIP scenes and their captions, then runs the real command line, in one run:

- 1 process with all the threads (``--threads``, default 2);
- ``torchrun --nproc_per_node=2``, each rank with half of them (the same cores, shared out);
- 1 process with 1 thread (what one rank gets).

Each row is the wall time of the whole command (start-up and model loading included) and the items per second
it gives; the speed-up is against the first row. The stores are compared shard by shard: they must be equal.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import captum_gradeclip as cg
from captum_gradeclip.zoo import shapes


def write_dataset(root: Path, items: int, seed: int) -> tuple[Path, Path]:
    """``items`` scenes as PNGs under ``root/images`` and their captions in ``root/pairs.csv``."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    pairs = root / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text"])
        for i in range(items):
            scene = shapes.make_scene(seed + i)
            scene.image.save(images / f"{i:05d}.png")
            writer.writerow([f"{i:05d}.png", scene.caption])
    return images, pairs


def run_command(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1024)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process; ranks share them")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=900_000, help="first scene seed (held out from training)")
    parser.add_argument("--device", default="cpu", help="explain-dataset's --device: cpu (default) or cuda")
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    command = sys.argv[1:] if argv is None else argv

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, pairs = write_dataset(root, args.items, args.seed)
        common = ["--images", str(images), "--pairs", str(pairs), "--model", args.model,
                  "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size),
                  "--device", args.device]  # fmt: skip
        single = [sys.executable, "-m", "captum_gradeclip", "explain-dataset"]
        port = str(29500 + os.getpid() % 500)
        distributed = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", port,
                       "-m", "captum_gradeclip", "explain-dataset"]  # fmt: skip
        cases = [
            (f"1 process, {args.threads} threads", single, args.threads, root / "one"),
            (f"torchrun, 2 processes x {max(1, args.threads // 2)} thread", distributed, max(1, args.threads // 2),
             root / "two"),
            ("1 process, 1 thread", single, 1, root / "one-thread"),
        ]  # fmt: skip
        rows = []
        for name, cmd, threads, out in cases:
            seconds = run_command([*cmd, *common, "--out", str(out)], threads)
            same = not cg.results.open(root / "one").differences(cg.results.open(out))
            rows.append((name, seconds, args.items / seconds, same))
            print(f"{name}: {seconds:.1f} s", flush=True)

    base = rows[0][2]
    lines = [
        f"explain-dataset on {args.items} ShapesCLIP scenes (`--model {args.model}`, batch {args.batch_size}), "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}. Wall time of the whole command, start-up included.",
        "",
        "| run | wall s | items/s | speed-up | store equal to 1 process |",
        "|---|---:|---:|---:|---|",
        *(f"| {n} | {s:.1f} | {r:.1f} | {r / base:.2f} | {'yes' if eq else 'NO'} |" for n, s, r, eq in rows),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.write_text(
            "# Dataset throughput\n\nGenerated by `python -m benchmarks.dataset --write docs/dataset_speed.md`; "
            f"do not edit by hand. This run: `python -m benchmarks.dataset {' '.join(command)}`.\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
