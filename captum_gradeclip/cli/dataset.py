"""``captum-gradeclip explain-dataset``: argparse plus :func:`captum_gradeclip.explain_dataset`, on
``torch.distributed``.

    captum-gradeclip explain-dataset --images DIR --pairs pairs.csv --out results/ [--model shapes]
    torchrun --nproc_per_node=2 -m captum_gradeclip explain-dataset --images DIR --pairs pairs.csv --out results/

``--pairs`` is a CSV (with a header) or JSONL file of ``image,text`` rows, or of ``image,label`` rows with
``--templates`` for zero-shot (``--column`` chooses when a file has both). The run, its store (Apache Parquet parts,
see :mod:`captum_gradeclip.results`) and its checks are the library's (:mod:`captum_gradeclip.runs`); this module
parses the arguments, checks ``--out`` before the model is loaded, starts the process group under torchrun, and
turns the library's errors into one line and exit code 2 (Ctrl-C: one line and exit code 130; the same command
resumes).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from captum_gradeclip.cli.commands import PROG, explain_dataset_parser, fail
from captum_gradeclip.cli.explain import pick_method
from captum_gradeclip.cli.files import check_output_directory
from captum_gradeclip.cli.models import load_model
from captum_gradeclip.images import ImageError, printable
from captum_gradeclip.results import StoreError, folder
from captum_gradeclip.runs import InputError, explain_dataset, read_pairs, run_config
from captum_gradeclip.runs.store import check_store, check_templates, run_meta

COMMAND = f"{PROG} explain-dataset"


def _init_distributed(device: str) -> tuple[int, int, str]:
    """``(rank, world_size, device)``; under torchrun, ``--device cuda`` is each process's own GPU (its local rank)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, device
    gpu = device.startswith("cuda")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if gpu:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def main(argv: list[str] | None = None) -> None:
    parser = explain_dataset_parser()
    args = parser.parse_args(argv)
    world_size, rank = 1, 0
    method = pick_method(args.method, args.mode, COMMAND)
    try:
        if args.batch_size < 1 or args.chunk_size < 1 or args.max_pixels < 1:
            raise InputError("`--batch-size`, `--chunk-size` and `--max-pixels` must be positive")
        if not args.images.is_dir():
            raise InputError(f"`--images` {printable(args.images)} is not a directory")
        check_templates(args.templates)
        items = read_pairs(args.pairs, args.column)
        labels = items[0].label is not None
        if args.templates and not labels:
            raise InputError("`--templates` applies to image,label rows; the pairs file has image,text rows")
        remote = "://" in args.out and not args.out.startswith("file://")
        rank, world_size, device = _init_distributed(args.device)
        if rank == 0:  # before the model is loaded: a folder that cannot take this run is refused at once
            column = "label" if labels else "text"
            config = run_config(args.model, args.dtype, args.pairs, args.images, method.name, args.mode,
                                args.templates, column, args.batch_size, args.max_pixels)  # fmt: skip
            if not remote:
                check_output_directory(Path(args.out))
            existing, meta = folder(args.out), run_meta(config, len(items), args.chunk_size)
            check_store(existing, meta, items, args.images, args.fresh)  # read-only: a foreign folder gets no lock
            with existing.locked():  # a busy store is refused before the model is loaded
                check_store(existing, meta, items, args.images, args.fresh)
        loaded = load_model(
            args.model, args.dtype, device, allow_missing_weights=args.allow_missing_weights
        )  # a CLIError: one line and exit code 2 in cli.main
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            store = explain_dataset(
                loaded, args.pairs, images=args.images, out=args.out, method=method, mode=args.mode,
                templates=args.templates, column=args.column, batch_size=args.batch_size,
                chunk_size=args.chunk_size, max_pixels=args.max_pixels, fresh=args.fresh,
            )  # fmt: skip
        for warning in caught:
            if rank == 0:
                print(f"{COMMAND}: warning: {printable(warning.message)}", file=sys.stderr)
        summary = store.summary()
    except (InputError, StoreError, ImageError, FileNotFoundError, OSError) as error:
        fail(error, COMMAND)
    except KeyboardInterrupt:
        print(f"{COMMAND}: interrupted; the parts written so far are kept: run the same command to resume",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["error_reasons"].items()) or "none"
        run = store.run
        rate = run["items_done_here"] / max(run["seconds"], 1e-9)
        print(f"explained {summary['items']} items into {printable(args.out)}: {summary['errors']} errors "
              f"({reasons}); rank 0 of {world_size} did {run['items_done_here']} items in this run, "
              f"{rate:.1f} items/s")  # fmt: skip
