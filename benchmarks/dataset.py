"""Items per second of ``explain-dataset`` on the shapes world: 1 process against ``torchrun`` with 2.

    python -m benchmarks.dataset [--items 1024] [--model shapes] [--write docs/dataset_speed.md]

Writes a folder of held-out ShapesCLIP scenes and their captions, then runs the real command line, in one run:

- 1 process with all the threads (``--threads``, default 2);
- ``torchrun --nproc_per_node=2``, each rank with half of them (the same cores, shared out);
- 1 process with 1 thread (what one rank gets).

Each row is the wall time of the whole command (start-up and model loading included) and the items per second
it gives; the speed-up is against the first row. The stores are compared part by part: they must be equal, their
numbers within :data:`RTOL` (another thread count sums in another order, which rounds differently).

Then the result store's own cost, side by side in the same run:

- its share of a run: the seconds spent checking, writing and opening the store against the seconds spent
  explaining, in one in-process ``cg.explain_dataset`` run on the same scenes (target: 5% or less);
- reading: the time to open a store of ``--store-items`` (100,000) items with ``--map-side`` x ``--map-side``
  maps in parts of ``--store-chunk-size`` (the library's default, 256) and read all maps as one tensor
  (``cg.results.open(path).maps()``), against ``numpy.load`` of the same maps saved as one ``.npy`` file
  (target: 3x or less). Both are the median of ``--repeats`` runs, files in the page cache.
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

import numpy as np
import torch

import captum_gradeclip as cg
from captum_gradeclip.zoo import shapes

#: The relative tolerance of the stores' numbers across thread and process counts (float32 sums in another order).
RTOL = 1e-5


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


def store_share(images: Path, pairs: Path, out: Path, model: str, batch_size: int, chunk_size: int) -> dict:
    """One in-process run: its explanation seconds and its store seconds (checking, writing and opening)."""
    from captum_gradeclip.cli import load_model

    store = cg.explain_dataset(load_model(model), pairs, images=images, out=out, batch_size=batch_size,
                               chunk_size=chunk_size, progress=False)  # fmt: skip
    return store.run


def synthetic_store(root: Path, items: int, side: int, chunk_size: int) -> np.ndarray:
    """A store of ``items`` rows as a run writes them (texts, token and word scores, maps of ``side x side``), and
    the same maps saved as ``root/maps.npy``; returns the maps."""
    from captum_gradeclip.results import FORMAT_VERSION, folder, table_of, write_part

    maps = np.random.default_rng(0).random((items, side * side), dtype=np.float32)
    store = folder(root / "store")
    store.make()
    meta = {"format": FORMAT_VERSION, "config": {"model": "synthetic"}, "items": items, "chunk_size": chunk_size}
    words = ["a", "red", "circle", "and", "a", "blue", "square"]
    for part in range(-(-items // chunk_size)):
        rows = [{"item": i, "image": f"{i:06d}.png", "text": " ".join(words), "score": 0.3,
                 "token_ids": list(range(9)), "token_scores": [0.1] * 9, "words": words, "word_scores": [0.1] * 7,
                 "map": maps[i]} for i in range(part * chunk_size, min((part + 1) * chunk_size, items))]  # fmt: skip
        write_part(store, part, table_of(rows, (side, side)), {**meta, "map_shape": [side, side]})
    np.save(root / "maps.npy", maps.reshape(items, side, side))
    return maps


def format_floor(root: Path, maps: np.ndarray) -> dict[str, Path]:
    """The same maps in one Parquet file per column type, written by pyarrow alone (page checksums on, no
    compression), to show what the format itself costs: a fixed-size list (the store's type) and a fixed-size
    binary (each map's bytes, which no reader sees as numbers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items, width = maps.shape
    columns = {
        "list": pa.FixedSizeListArray.from_arrays(pa.array(maps.reshape(-1)), width),
        "binary": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width * 4), items, [None, pa.py_buffer(np.ascontiguousarray(maps).tobytes())]
        ),
    }
    paths = {}
    for kind, column in columns.items():
        paths[kind] = root / f"one-file-{kind}.parquet"
        pq.write_table(pa.table({"map": column}), paths[kind], compression="none", write_page_checksum=True)
    return paths


def read_floor(path: Path, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """The maps of one :func:`format_floor` file as one array (pyarrow alone, page checksums verified)."""
    import pyarrow.parquet as pq

    column = pq.read_table(path, page_checksum_verification=True).column("map").combine_chunks()
    if kind == "list":
        return column.values.to_numpy().reshape(shape)
    return np.frombuffer(column.buffers()[1], dtype=np.float32).reshape(shape)


def read_times(root: Path, repeats: int) -> tuple[dict[str, float], bool]:
    """Median seconds of ``numpy.load``, of ``open(...).maps()`` and of pyarrow alone reading the same maps from one
    file (:func:`format_floor`), timed in turn in each repeat (so that the machine's load hits them alike); and
    whether all give the same maps."""
    reference = np.load(root / "maps.npy")
    floors = format_floor(root, reference.reshape(len(reference), -1))
    readers = {
        "npy": lambda: np.load(root / "maps.npy"),
        "ours": lambda: cg.results.open(root / "store").maps().numpy(),
        **{kind: (lambda k=kind: read_floor(floors[k], k, reference.shape)) for kind in floors},
    }
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    same = True
    for _ in range(repeats):
        for name, read in readers.items():
            start = time.perf_counter()
            got = read()
            seconds[name].append(time.perf_counter() - start)
            same = same and bool(np.array_equal(got, reference))
    return {name: float(np.median(values)) for name, values in seconds.items()}, same


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1024)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process; ranks share them")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=900_000, help="first scene seed (held out from training)")
    parser.add_argument("--device", default="cpu", help="explain-dataset's --device: cpu (default) or cuda")
    parser.add_argument("--store-items", type=int, default=100_000, help="items of the store that is read back")
    parser.add_argument("--map-side", type=int, default=14, help="its maps' side (14: a ViT-B/16 at 224 pixels)")
    parser.add_argument("--store-chunk-size", type=int, default=256, help="its items per part (the default: 256)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="reads of the store (and of the .npy) to take the median of"
    )
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
            same = not cg.results.open(root / "one").differences(cg.results.open(out), rtol=RTOL)
            rows.append((name, seconds, args.items / seconds, same))
            print(f"{name}: {seconds:.1f} s", flush=True)
        run = store_share(images, pairs, root / "in-process", args.model, args.batch_size, args.chunk_size)
        synthetic_store(root / "synthetic", args.store_items, args.map_side, args.store_chunk_size)
        times, same_maps = read_times(root / "synthetic", args.repeats)

    base = rows[0][2]
    lines = [
        f"explain-dataset on {args.items} ShapesCLIP scenes (`--model {args.model}`, batch {args.batch_size}), "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}. Wall time of the whole command, start-up included.",
        "",
        "| run | wall s | items/s | speed-up | store equal to 1 process (numbers to 1e-5) |",
        "|---|---:|---:|---:|---|",
        *(f"| {n} | {s:.1f} | {r:.1f} | {r / base:.2f} | {'yes' if eq else 'NO'} |" for n, s, r, eq in rows),
    ]
    npy_seconds, our_seconds = times["npy"], times["ours"]
    share, ratio = run["store_seconds"] / run["explain_seconds"], our_seconds / npy_seconds
    lines += [
        "",
        f"The store's own cost, in the same run: {args.items} items explained in-process (`cg.explain_dataset`, "
        f"parts of {args.chunk_size}); a store of {args.store_items:,} items with {args.map_side}x{args.map_side} maps "
        f"in parts of {args.store_chunk_size}, read {args.repeats} times (median).",
        "",
        "| store cost | ours s | against s | ratio | target | met |",
        "|---|---:|---:|---:|---:|---|",
        f"| checking, writing and opening the store / explaining | {run['store_seconds']:.3f} | "
        f"{run['explain_seconds']:.3f} | {share:.1%} | 5% | {'yes' if share <= 0.05 else 'NO'} |",
        f"| open + maps() as one tensor / numpy.load of the same .npy | {our_seconds:.3f} | {npy_seconds:.3f} | "
        f"{ratio:.2f}x | 3x | {'yes' if ratio <= 3 else 'NO'} |",
        "",
        "What the format itself costs, in the same run: pyarrow alone (no checks of ours) reading the same maps from "
        "one Parquet file, page checksums on, no compression.",
        "",
        "| one file, pyarrow alone / numpy.load | pyarrow s | numpy.load s | ratio |",
        "|---|---:|---:|---:|",
        f"| the map as a fixed-size list of float32 (the store's column type) | {times['list']:.3f} | "
        f"{npy_seconds:.3f} | {times['list'] / npy_seconds:.2f}x |",
        f"| the map as fixed-size binary (its bytes: no reader sees numbers) | {times['binary']:.3f} | "
        f"{npy_seconds:.3f} | {times['binary'] / npy_seconds:.2f}x |",
    ]
    if not same_maps:
        lines.append("\nThe maps read back differ from the .npy: a bug.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.write_text(
            "# Dataset throughput\n\nGenerated by `python -m benchmarks.dataset --write docs/dataset_speed.md`; "
            f"do not edit by hand. This run: `python -m benchmarks.dataset {' '.join(command)}`.\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
