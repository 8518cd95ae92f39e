"""``captum-gradeclip explain-dataset``: Grad-ECLIP (or ``--method NAME``) over a whole dataset, resumable, on
``torch.distributed``.

    captum-gradeclip explain-dataset --images DIR --pairs pairs.csv --out results/ [--model shapes]
    torchrun --nproc_per_node=2 -m captum_gradeclip explain-dataset --images DIR --pairs pairs.csv --out results/

``--pairs`` is a CSV (with a header) or JSONL file of ``image,text`` rows, or of ``image,label`` rows with
``--templates`` for zero-shot (the map explains the label's prompt among all classes' prompts). Items are cut into
chunks of ``--chunk-size``; chunk ``c`` goes to rank ``c % world_size`` and is written as one shard (see
:mod:`captum_gradeclip.results`), so the store does not depend on the number of processes. A run that is killed
and started again with the same command skips the complete chunks; a run with other inputs or settings, or a second
run while one holds ``--out``, is refused. Missing, corrupt, truncated or oversized (``--max-pixels``) images, paths
outside ``--images``, empty texts, overlong texts and unknown labels become error rows; the run goes on and the
summary counts them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.cli.commands import PROG, explain_dataset_parser, fail
from captum_gradeclip.cli.explain import DEFAULT_METHOD, check_image_side, pick_method, why_not
from captum_gradeclip.cli.files import check_output_directory
from captum_gradeclip.cli.models import LoadedModel, load_model
from captum_gradeclip.images import DEFAULT_MAX_PIXELS, ImageError, load_image, printable, resolve_inside
from captum_gradeclip.results import (
    FORMAT_VERSION,
    MANIFEST,
    SHARDS,
    StoreError,
    atomic_write_json,
    chunk_complete,
    locked,
    remove_temporary_files,
    write_chunk,
)


@dataclass(frozen=True)
class Item:
    """One row of the pairs file."""

    index: int
    image: str
    text: str | None = None
    label: str | None = None


def read_pairs(path: str | Path) -> list[Item]:
    """Reads ``image,text`` or ``image,label`` rows from a CSV (with header) or JSONL file.

    A UTF-8 byte-order mark is accepted. Every row must hold a string ``image`` and a string ``text`` (or
    ``label``, whichever the first row has); a bad row is reported with the file name and its line number.

    Args:
        path (str or Path): the pairs file; ``.jsonl``/``.json`` is read as JSON lines, anything else as CSV.

    Returns:
        *list[Item]* in file order; ``Item.index`` is the row number from 0.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a file without rows, a missing column, a line that is not JSON or a value that is not a
            string, naming the file and the line.
    """
    path = Path(path)
    name = printable(path)
    if not path.is_file():
        raise FileNotFoundError(f"`pairs` file not found: {name}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"`pairs` file {name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    rows: list[tuple[int, dict]] = []  # (line number from 1, row)
    if path.suffix in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{name}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{name}:{number}: each line must be a JSON object; got {type(row).__name__}")
            rows.append((number, row))
        columns = set(rows[0][1]) if rows else set()
    else:
        reader = csv.DictReader(text.splitlines())
        columns = {c.strip() for c in reader.fieldnames or []}
        for row in reader:
            rows.append((reader.line_num, {(k or "").strip(): v for k, v in row.items()}))
    if not columns:
        raise ValueError(f"`pairs` file {name} is empty")
    if "image" not in columns or not ({"text", "label"} & columns):
        found = ", ".join(sorted(map(repr, columns)))
        raise ValueError(f"`pairs` file {name} must have an 'image' column and a 'text' or 'label' column; got {found}")
    if not rows:
        raise ValueError(f"`pairs` file {name} has a header but no rows")
    field = "text" if "text" in columns else "label"
    items = []
    for index, (number, row) in enumerate(rows):
        for key in ("image", field):
            if not isinstance(row.get(key), str):
                got = "nothing" if row.get(key) is None else type(row.get(key)).__name__
                raise ValueError(f"{name}:{number}: `{key}` must be a string; got {got}")
        items.append(Item(index, row["image"], row[field] if field == "text" else None, row.get("label")))
    return items


class DatasetExplainer:
    """Explains chunks of items with one model; the unit of work of :func:`run`.

    Args:
        loaded (LoadedModel): the model and its loader's own preprocessing, from
            :func:`captum_gradeclip.cli.models.load_model` (any ``--model`` spec).
        images (Path): the folder that image paths are relative to.
        mode (str): Grad-ECLIP mode.
        batch_size (int): items per forward pass.
        classes (list[str], optional): zero-shot class names (pairs with labels).
        templates (list[str], optional): prompt templates with ``{}`` for zero-shot.
        max_pixels (int, optional): the pixel budget per image (see :func:`captum_gradeclip.images.load_image`).
        method (Method, optional): the method of :mod:`captum_gradeclip.methods`. Default: Grad-ECLIP (native).

    Attributes:
        no_words (str or None): why the method gives no word importances for this model (the rows then have no
            ``token_scores``); ``None`` when it does, or for zero-shot rows (which have none).

    Raises:
        ValueError: the method cannot explain this model's images (saying why).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        images: Path,
        mode: str = "native",
        batch_size: int = 32,
        classes: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        method: methods.Method | None = None,
    ) -> None:
        self.loaded, self.model, self.images = loaded, loaded.model, Path(images)
        self.method = methods.get(DEFAULT_METHOD) if method is None else method
        adapter = cg.get_adapter(self.model)
        check_image_side(self.method, adapter)
        self.no_words = None if classes else why_not(self.method, adapter, "text")
        self.mode, self.batch_size, self.max_pixels = mode, batch_size, max_pixels
        self.classes = list(classes) if classes else None
        self.zero_shot = None
        if self.classes:
            self.zero_shot = cg.ImageTextSimilarity(self.model, text_embeds=self._class_embeds(templates or ["{}"]))

    def _class_embeds(self, templates: Sequence[str]) -> torch.Tensor:
        adapter = cg.get_adapter(self.model)
        per_template = []
        for template in templates:
            ids, mask = self.loaded.tokenize([template.format(c) for c in self.classes])  # type: ignore[union-attr]
            with torch.no_grad():
                per_template.append(F.normalize(adapter.embed_texts(ids, mask), dim=-1))
        return torch.stack(per_template).mean(0)  # the usual prompt ensemble

    def _check(self, item: Item) -> str | None:
        """The reason the item is an error row, from its text, label and path alone (nothing decoded)."""
        if self.classes is not None:
            if item.label not in self.classes:
                return f"unknown label: {printable(item.label)}"
        else:
            if item.text is None or not item.text.strip():
                return "empty text"
            n_tokens, limit = self.loaded.count_tokens(item.text), self.loaded.max_tokens
            if limit is not None and n_tokens > limit:
                return f"overlong text: {n_tokens} tokens > {limit}"
        try:
            resolve_inside(self.images, item.image)
        except ImageError as error:
            return str(error)
        return None

    def explain_chunk(self, items: Sequence[Item]) -> tuple[dict[str, torch.Tensor], list[tuple[int, str]]]:
        """Results of one chunk as tensors (good items) and error rows ``(item, reason)``.

        Images are decoded one batch at a time, so at most ``batch_size`` decoded images (each within the pixel
        budget) are held at once, whatever the chunk size.
        """
        pending: list[Item] = []
        errors: list[tuple[int, str]] = []
        for item in items:
            reason = self._check(item)
            if reason is not None:
                errors.append((item.index, reason))
            else:
                pending.append(item)
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(pending), self.batch_size):
            batch = []
            for item in pending[start : start + self.batch_size]:
                try:
                    batch.append((item, load_image(item.image, root=self.images, max_pixels=self.max_pixels)))
                except ImageError as error:
                    errors.append((item.index, str(error)))
            if batch:
                for k, v in self._explain_batch(batch).items():
                    parts.setdefault(k, []).append(v)
                del batch  # the decoded images of this batch
        tensors = {k: _cat_padded(v) for k, v in parts.items()}
        tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # float32 on disk
        if not parts:
            tensors = {"item": torch.zeros(0, dtype=torch.long)}
        return tensors, sorted(errors)

    def _explain_batch(self, batch: list[tuple[Item, Image.Image]]) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        pixels = torch.cat([self.loaded.pixels(image) for _, image in batch]).to(device)
        own = list(range(len(batch)))
        out = {"item": torch.tensor([item.index for item, _ in batch])}
        if self.zero_shot is not None:
            labels = [self.classes.index(item.label) for item, _ in batch]  # type: ignore[union-attr]
            with torch.no_grad():
                scores = self.zero_shot(pixels)
            out["map"] = self._explainer(self.zero_shot).attribute(pixels, target=labels)[:, 0]
            out["score"] = scores[own, labels]
            out["prediction"] = scores.argmax(-1)
            out["label"] = torch.tensor(labels)
            return out
        ids, mask = (t.to(device) for t in self.loaded.tokenize([item.text for item, _ in batch]))  # type: ignore[misc]
        sim = cg.ImageTextSimilarity(self.model, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            scores = sim(pixels)
        out["map"] = self._explainer(sim).attribute(pixels, target=own)[:, 0]
        out["score"] = scores[own, own]
        if self.no_words is None:
            tsim = cg.TextImageSimilarity(self.model, images=pixels)
            extra = (mask,) if mask is not None else None
            out["token_scores"] = self._explainer(tsim).attribute(ids, target=own, additional_forward_args=extra)
        out["token_ids"] = ids
        return out

    def _explainer(self, sim: cg.SimilarityWrapper) -> cg.SimilarityAttribution:
        return self.method.build(sim, mode=self.mode)


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    if tensors[0].dim() == 2 and len({t.shape[-1] for t in tensors}) > 1:
        width = max(t.shape[-1] for t in tensors)
        tensors = [F.pad(t, (0, width - t.shape[-1])) for t in tensors]
    return torch.cat(tensors)


def run(
    explainer: DatasetExplainer,
    items: Sequence[Item],
    out: str | Path,
    chunk_size: int,
    config: dict,
    rank: int = 0,
    world_size: int = 1,
    fresh: bool = False,
) -> dict:
    """Explains every pending chunk of this rank, then (rank 0) writes the summary into the manifest.

    Rank 0 holds the store's lock for the whole run (another run into the same ``out`` is refused at once),
    removes the temporary files of killed runs, and refuses a store made with another configuration (or, with
    ``fresh``, discards it).

    Args:
        explainer (DatasetExplainer): does the work of one chunk.
        items (list[Item]): the whole dataset, in order.
        out (str or Path): the result store directory.
        chunk_size (int): items per chunk (and shard).
        config (dict): what defines the run (inputs, model, mode, ...); a store made with another config is
            refused.
        rank, world_size (int): this process's place in the process group.
        fresh (bool, optional): discard whatever store ``out`` holds and start again. Default: False.

    Returns:
        *dict*: the summary (items, errors by reason, chunks done in this call, seconds).

    Raises:
        StoreError: if another run holds the store, or the store holds a run with another config.
    """
    root = Path(out)
    manifest = _manifest(items, chunk_size, config)
    with contextlib.ExitStack() as stack:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(root))
            (root / SHARDS).mkdir(exist_ok=True)
            remove_temporary_files(root)
            if fresh:
                discard_store(root)
            _start_or_resume(root, manifest)
            _check_images_unchanged(root, manifest, items, explainer.images)
        _barrier(world_size)
        if rank != 0:
            _start_or_resume(root, manifest)
        return _run_chunks(explainer, items, root, manifest, rank, world_size)
    raise AssertionError("unreachable")  # pragma: no cover


def _manifest(items: Sequence[Item], chunk_size: int, config: dict) -> dict:
    chunks = (len(items) + chunk_size - 1) // chunk_size
    return {"format": FORMAT_VERSION, "config": config, "items": len(items), "chunks": chunks,
            "chunk_size": chunk_size}  # fmt: skip


def _run_chunks(
    explainer: DatasetExplainer, items: Sequence[Item], root: Path, manifest: dict, rank: int, world_size: int
) -> dict:
    chunks, chunk_size = manifest["chunks"], manifest["chunk_size"]
    mine = [c for c in range(chunks) if c % world_size == rank and not chunk_complete(root, c, manifest)]
    total = sum(min(chunk_size, len(items) - c * chunk_size) for c in mine)
    start = time.perf_counter()
    desc = f"rank {rank}/{world_size}" + (f" ({len(items)} items in all)" if rank == 0 else "")
    with tqdm(total=total, desc=desc, position=rank, unit="item", file=sys.stderr) as bar:
        for c in mine:
            chunk_items = items[c * chunk_size : (c + 1) * chunk_size]
            tensors, errors = explainer.explain_chunk(chunk_items)
            meta = {str(i.index): {"image": i.image, "text": i.text, "label": i.label} for i in chunk_items}
            stats = {str(i.index): _image_stat(explainer.images, i.image) for i in chunk_items}
            record = {"items": [i.index for i in chunk_items], "errors": errors, "meta": meta, "image_stats": stats}
            write_chunk(root, c, tensors, record)
            bar.update(len(chunk_items))
    seconds = time.perf_counter() - start
    _barrier(world_size)
    summary = _summary(root, chunks)
    summary.update(seconds=seconds, chunks_done_here=len(mine), items_done_here=total, world_size=world_size)
    if rank == 0:
        atomic_write_json(root / MANIFEST, {**manifest, "complete": True, "summary": summary})
    return summary


KEYS = ("format", "config", "items", "chunks", "chunk_size")


def _start_or_resume(root: Path, manifest: dict) -> None:
    path = root / MANIFEST
    if path.exists():
        try:
            found = json.loads(path.read_text())
            found = {k: found.get(k) for k in KEYS}
        except (ValueError, AttributeError):
            raise StoreError(f"`out` {root} holds a damaged manifest.json; use a new directory") from None
        if found != manifest:
            changed = [k for k in KEYS if k != "config" and found[k] != manifest[k]]
            old, new = found["config"] or {}, manifest["config"]
            changed += sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise StoreError(
                f"`out` {root} holds a run with other inputs or settings ({', '.join(changed)} changed); "
                "it is not mixed with this one: use a new --out, or --fresh to discard the old store"
            )
        return
    atomic_write_json(path, manifest)


def _image_stat(images: Path, name: str) -> list[int] | None:
    """``[size, mtime_ns]`` of an image file inside ``images``, or ``None`` (missing, or outside)."""
    try:
        stat = resolve_inside(images, name).stat()
    except (ImageError, OSError):
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _check_images_unchanged(root: Path, manifest: dict, items: Sequence[Item], images: Path) -> None:
    """Refuses to resume when an image file of a complete chunk changed (size or time), appeared or vanished
    since it was explained: old and new results would be mixed."""
    changed: dict[str, None] = {}  # distinct files, in item order
    for chunk in range(manifest["chunks"]):
        path = root / SHARDS / f"chunk-{chunk:06d}.json"
        if not path.exists() or not chunk_complete(root, chunk, manifest):
            continue
        for index, stat in json.loads(path.read_text()).get("image_stats", {}).items():
            if _image_stat(images, items[int(index)].image) != stat:
                changed[items[int(index)].image] = None
    if changed:
        raise StoreError(
            f"`out` {printable(root)}: {len(changed)} image file(s) changed, appeared or vanished since they were "
            f"explained (e.g. {printable(next(iter(changed)))}); old and new results are not mixed: use --fresh "
            "to start again, or a new --out"
        )


def discard_store(root: Path) -> None:
    """Deletes the store in ``root`` (its manifest and chunk files; nothing else); call it holding the lock."""
    for path in [root / MANIFEST, *(root / SHARDS).glob("chunk-*.json"), *(root / SHARDS).glob("chunk-*.safetensors")]:
        path.unlink(missing_ok=True)


def check_out(
    root: Path, manifest: dict, fresh: bool = False, items: Sequence[Item] = (), images: Path | None = None
) -> None:
    """Checks before any computing that ``root`` can take this run: a writable directory, not in use by another
    run, and empty or holding this same run (any store, with ``fresh``).

    Raises:
        CLIError: if it is a file or not writable.
        StoreError: if another run holds it or it holds another run.
    """
    check_output_directory(root)
    with locked(root):
        if (root / MANIFEST).exists() and not fresh:
            _start_or_resume(root, manifest)
            if images is not None:
                _check_images_unchanged(root, manifest, items, images)


def _summary(root: Path, chunks: int) -> dict:
    reasons: Counter[str] = Counter()
    done = 0
    for c in range(chunks):
        record = json.loads((root / SHARDS / f"chunk-{c:06d}.json").read_text())
        done += len(record["items"])
        reasons.update(reason.split(":")[0] for _, reason in record["errors"])
    return {"items": done, "errors": sum(reasons.values()), "error_reasons": dict(sorted(reasons.items()))}


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


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


def check_templates(templates: Sequence[str] | None) -> None:
    """Checks that every zero-shot template has exactly one ``{}`` for the class name.

    Raises:
        ValueError: naming the first bad template.
    """
    for template in templates or []:
        try:
            filled = template.format("\0")
        except (IndexError, KeyError, ValueError):
            filled = None
        if filled is None or filled.count("\0") != 1:
            raise ValueError(
                f"`--templates` {printable(repr(template))} must hold exactly one {{}} for the class name "
                "(write {{ and }} for literal braces)"
            )


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = explain_dataset_parser()
    args = parser.parse_args(argv)
    world_size = 1
    method = pick_method(args.method, args.mode, f"{PROG} explain-dataset")
    try:
        if args.batch_size < 1 or args.chunk_size < 1 or args.max_pixels < 1:
            raise ValueError("`--batch-size`, `--chunk-size` and `--max-pixels` must be positive")
        if not args.images.is_dir():
            raise ValueError(f"`--images` {printable(args.images)} is not a directory")
        check_templates(args.templates)
        items = read_pairs(args.pairs)
        labels = items[0].label is not None
        if args.templates and not labels:
            raise ValueError("`--templates` applies to image,label rows; the pairs file has image,text rows")
        # what defines the run: a store made with other inputs or settings is refused, never mixed
        config = {"model": args.model, "mode": args.mode, "images": str(args.images.resolve()),
                  "pairs": str(args.pairs.resolve()), "pairs_sha256": _sha256(args.pairs),
                  "templates": args.templates, "chunk_size": args.chunk_size, "batch_size": args.batch_size,
                  "dtype": args.dtype, "max_pixels": args.max_pixels}  # fmt: skip
        if method.name != DEFAULT_METHOD:  # stores made before --method existed (Grad-ECLIP) still resume
            config["method"] = method.name
        rank, world_size, device = _init_distributed(args.device)
        if rank == 0:
            manifest = _manifest(items, args.chunk_size, config)
            check_out(args.out, manifest, args.fresh, items, args.images)  # before any computing
        loaded = load_model(
            args.model, args.dtype, device, allow_missing_weights=args.allow_missing_weights
        )  # a CLIError: one line and exit code 2 in cli.main
        classes = sorted({i.label for i in items if i.label}) if labels else None
        explainer = DatasetExplainer(
            loaded, args.images, args.mode, args.batch_size, classes, args.templates, args.max_pixels, method
        )
        if explainer.no_words is not None and rank == 0:
            print(f"{PROG} explain-dataset: warning: no word importances: {explainer.no_words}", file=sys.stderr)
        summary = run(explainer, items, args.out, args.chunk_size, config, rank, world_size, args.fresh)
    except (ValueError, FileNotFoundError, TypeError) as error:  # a CLIError: one line and exit 2 in cli.main
        fail(error, f"{PROG} explain-dataset")
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    if rank == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["error_reasons"].items()) or "none"
        rate = summary["items_done_here"] / max(summary["seconds"], 1e-9)
        done = summary["items_done_here"]
        print(f"explained {summary['items']} items into {printable(args.out)}: {summary['errors']} errors "
              f"({reasons}); rank 0 of {world_size} did {done} items in this run, {rate:.1f} items/s")  # fmt: skip
