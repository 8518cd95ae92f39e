"""A dataset run over its result store: checking the folder, resuming, sharing the parts among ranks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from tqdm import tqdm

from captum_gradeclip import methods
from captum_gradeclip.images import DEFAULT_MAX_PIXELS, printable
from captum_gradeclip.results import (
    FORMAT_VERSION,
    PART,
    Folder,
    ResultStore,
    Scan,
    StoreError,
    _changed,
    folder,
    identifiably_ours,
    old_store_message,
    part_name,
    scan,
    write_part,
)
from captum_gradeclip.runs.explainer import DEFAULT_METHOD, DatasetExplainer, Loaded, image_stat
from captum_gradeclip.runs.pairs import InputError, Item, read_pairs

#: What a run explains: the cosine similarity of each image and its text (or its label's prompts).
SCORE = "cosine"


def run_config(
    model: str,
    dtype: str,
    pairs: str | Path,
    images: str | Path,
    method: str = DEFAULT_METHOD,
    mode: str = "native",
    templates: Sequence[str] | None = None,
    column: str = "text",
    batch_size: int = 32,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict:
    """What defines a run: a store made with another configuration is refused (or, with ``fresh``, replaced).

    Returns:
        *dict* of JSON values: model identity, dtype, method, mode, score, templates, the column explained, the
        images folder, the pairs file and its sha256, the batch size and the pixel budget.
    """
    with Path(pairs).open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"model": model, "dtype": dtype, "method": method, "mode": mode, "score": SCORE,
            "templates": list(templates) if templates else None, "column": column,
            "images": str(Path(images).resolve()), "pairs": str(Path(pairs).resolve()), "pairs_sha256": digest,
            "batch_size": batch_size, "max_pixels": max_pixels}  # fmt: skip


def run_meta(config: dict, items: int, chunk_size: int) -> dict:
    """The metadata every part of the run carries (with its own ``part`` and ``map_shape``)."""
    return {"format": FORMAT_VERSION, "config": config, "items": items, "chunk_size": chunk_size}


def _signature(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("format", "config", "items", "chunk_size")}, sort_keys=True)


def check_store(
    out: str | Path | Folder,
    meta: dict,
    items: Sequence[Item],
    images: Path,
    fresh: bool = False,
    act: bool = False,
) -> Scan:
    """Checks that ``out`` can take this run, before any computing (call it holding the store's lock).

    ``out`` must be empty (but for a lock and temporary files of this store), or hold parts of this store and
    nothing that only looks like one. Parts of another configuration are refused, or with ``fresh`` removed (with
    ``act``); so are all parts with ``fresh``. A resume is refused when an image file of a stored row changed,
    appeared or vanished since it was explained. With ``act``, temporary files of killed runs are removed.

    Args:
        meta (dict): the run's format, configuration, item count and chunk size.

    Returns:
        *Scan*: what the folder holds (after removing what ``act`` removes).

    Raises:
        StoreError: naming what is in the way and what to do.
    """
    store = folder(out)
    label = store.label
    found = scan(store) if store.exists() else Scan({}, {}, [], [], False)
    if found.old_format and not found.parts:
        raise StoreError(old_store_message(label))
    ours = {n for n in found.problems if PART.fullmatch(n) and identifiably_ours(store, n)}  # damaged: redone
    for name, reason in found.problems.items():
        if name in ours:
            continue
        raise StoreError(
            f"`out` {label} holds {printable(name)}, which is not an intact part of this store ({reason}); this "
            "run does not write over, nor delete, a file it cannot tell it wrote: move it away"
        )
    if found.others and not found.parts:
        shown = ", ".join(repr(printable(n)) for n in found.others[:3])
        raise StoreError(
            f"`out` {label} is not empty and holds no result store (it holds {shown}"
            f"{', ...' if len(found.others) > 3 else ''}): give an empty or new folder"
            + ("; --fresh removes only a store's own parts" if fresh else "")
        )
    signature = _signature(meta)
    other = {n: p for n, p in found.parts.items() if p.signature != signature}
    if other and not fresh:
        changed = _changed(json.loads(next(iter(other.values())).signature), meta)
        raise StoreError(
            f"`out` {label} holds a run with other inputs or settings ({', '.join(changed)} changed); it is not "
            "mixed with this one: use a new --out, or --fresh to discard the old store"
        )
    if fresh:
        if act:
            for name in [*map(part_name, sorted(found.parts)), *sorted(ours)]:
                store.remove(name)
        found.parts.clear()
    else:
        _check_images_unchanged(found, items, images, label)
    if act:
        for name in found.temporary:
            with contextlib.suppress(FileNotFoundError):
                store.remove(name)
    return found


def _check_images_unchanged(found: Scan, items: Sequence[Item], images: Path, label: str) -> None:
    changed: dict[str, None] = {}  # distinct files, in item order
    for part in found.parts.values():
        table = part.table(["item", "image_bytes", "image_mtime_ns"]).to_pydict()
        for index, size, mtime in zip(table["item"], table["image_bytes"], table["image_mtime_ns"], strict=True):
            if image_stat(images, items[index].image) != (size, mtime):
                changed[items[index].image] = None
    if changed:
        raise StoreError(
            f"`out` {label}: {len(changed)} image file(s) changed, appeared or vanished since they were "
            f"explained (e.g. {printable(next(iter(changed)))}); old and new results are not mixed: use --fresh "
            "to start again, or a new --out"
        )


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def explain_dataset(
    model: Loaded,
    pairs: str | Path,
    *,
    images: str | Path,
    out: str | Path,
    method: str | methods.Method | None = None,
    mode: str = "native",
    templates: Sequence[str] | None = None,
    column: str | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fresh: bool = False,
    filesystem: Any = None,
    progress: bool = True,
) -> ResultStore:
    """Explains every row of a pairs file into a resumable result store of Parquet parts, and opens it.

    Items are cut into chunks of ``chunk_size``; each chunk is one part (see :mod:`captum_gradeclip.results`).
    Under ``torch.distributed`` (``torchrun``), chunk ``c`` goes to rank ``c % world_size``: the store does not
    depend on the number of processes. Run it again after an interruption and it explains only the missing
    chunks. Bad rows (a missing, corrupt, oversized or outside image, an impossible path, an empty, overlong or
    refused text, an unknown label, a non-finite result) become error rows naming their reason; the run goes on.

    Args:
        model (Loaded): the model and its loader's own preprocessing, as
            ``captum_gradeclip.cli.load_model(spec)`` returns them (``.model``, ``.name``, ``.pixels``,
            ``.tokenize``, ``.tokens``, ``.count_tokens``, ``.max_tokens``).
        pairs (str or Path): a CSV (with a header) or JSONL file of ``image,text`` or ``image,label`` rows.
        images (str or Path): the folder that image paths are relative to (and confined to).
        out (str or Path): the store's folder, or an fsspec URL (``memory://out``, ``s3://bucket/out``).
        method (str or Method, optional): a name of :mod:`captum_gradeclip.methods`. Default: Grad-ECLIP.
        mode (str, optional): Grad-ECLIP's mode, ``"native"`` (default) or ``"paper"``.
        templates (list[str], optional): zero-shot prompt templates with one ``{}`` for the label.
        column (str, optional): ``"text"`` or ``"label"``, needed when the file has both columns.
        batch_size (int, optional): items per model call. Default: 32.
        chunk_size (int, optional): items per part, the unit of resuming. Default: 256.
        max_pixels (int, optional): the pixel budget per image, of the file and once resized for the model.
        fresh (bool, optional): discard the parts of the store in ``out`` (only those) and start again.
        filesystem (optional): a ``pyarrow.fs.FileSystem`` or fsspec filesystem that ``out`` is a path on.
        progress (bool, optional): show a tqdm progress bar on stderr. Default: True.

    Returns:
        *ResultStore*: the opened store; its ``run`` attribute says what this call did (``items_done_here``,
        ``parts_done_here``, ``seconds``, ``explain_seconds`` and ``store_seconds`` (checking, writing and opening
        the store), ``rank``, ``world_size``).

    Raises:
        InputError: a bad pairs file, option or folder. StoreError: ``out`` is busy, holds another run or files
        that are not this store's. FileNotFoundError: the pairs file does not exist.

    Examples::

        >>> from captum_gradeclip.cli import load_model
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\nnowhere.png,a circle\\n")
        >>> store = cg.explain_dataset(load_model("shapes"), tmp_path / "pairs.csv", images=tmp_path,
        ...                            out=tmp_path / "out", progress=False)
        >>> store.summary()
        {'items': 2, 'errors': 1, 'error_reasons': {'missing image': 1}}
        >>> store.maps().shape
        torch.Size([1, 8, 8])
    """
    images = Path(images)
    if batch_size < 1 or chunk_size < 1 or (max_pixels is not None and max_pixels < 1):
        raise InputError("`batch_size`, `chunk_size` and `max_pixels` must be positive")
    if not images.is_dir():
        raise InputError(f"`images` {printable(images)} is not a directory")
    check_templates(templates)
    method = methods.get(DEFAULT_METHOD if method is None else method) if not isinstance(method, methods.Method) \
        else method  # fmt: skip
    items = read_pairs(pairs, column)
    labels = items[0].label is not None
    if templates and not labels:
        raise InputError("`templates` applies to image,label rows; the pairs file has image,text rows")
    dtype = str(next(model.model.parameters()).dtype).removeprefix("torch.")
    config = run_config(model.name, dtype, pairs, images, method.name, mode, templates, "label" if labels else "text",
                        batch_size, max_pixels)  # fmt: skip
    meta = run_meta(config, len(items), chunk_size)
    store = folder(out, filesystem)
    rank, world_size = _rank()
    with contextlib.ExitStack() as stack:
        if rank == 0:
            if store.exists():  # read-only first: nothing is created in a folder that is not one of our stores
                check_store(store, meta, items, images, fresh)
            store.make()
            stack.enter_context(store.locked())
            check_store(store, meta, items, images, fresh, act=True)
        _barrier(world_size)
        classes = sorted({i.label for i in items if i.label}) if labels else None
        explainer = DatasetExplainer(model, images, mode, batch_size, classes, templates, max_pixels, method)
        if explainer.no_words is not None and rank == 0:
            import warnings

            warnings.warn(f"no word importances: {explainer.no_words}", stacklevel=2)
        done = _run_parts(explainer, items, store, meta, rank, world_size, progress)
        _barrier(world_size)
    clock = time.perf_counter()
    opened = ResultStore(store)
    done["store_seconds"] += time.perf_counter() - clock
    opened.run = {**done, "rank": rank, "world_size": world_size}
    return opened


def _run_parts(
    explainer: DatasetExplainer, items: Sequence[Item], store: Folder, meta: dict, rank: int, world_size: int,
    progress: bool,
) -> dict:  # fmt: skip
    size = meta["chunk_size"]
    chunks = -(-len(items) // size)
    signature = _signature(meta)
    clock = time.perf_counter()
    present = {n for n, p in scan(store).parts.items() if p.signature == signature}
    store_seconds, explain_seconds = time.perf_counter() - clock, 0.0
    mine = [c for c in range(chunks) if c % world_size == rank and c not in present]
    total = sum(min(size, len(items) - c * size) for c in mine)
    start = time.perf_counter()
    desc = f"rank {rank}/{world_size}" + (f" ({len(items)} items in all)" if rank == 0 else "")
    with tqdm(total=total, desc=desc, position=rank, unit="item", file=sys.stderr, disable=not progress) as bar:
        for c in mine:
            chunk = items[c * size : (c + 1) * size]
            clock = time.perf_counter()
            table, shape = explainer.explain_chunk(chunk)
            explain_seconds += time.perf_counter() - clock
            clock = time.perf_counter()
            write_part(store, c, table, {**meta, "map_shape": list(shape) if shape else None})
            store_seconds += time.perf_counter() - clock
            bar.update(len(chunk))
    return {"items_done_here": total, "parts_done_here": len(mine), "seconds": time.perf_counter() - start,
            "explain_seconds": explain_seconds, "store_seconds": store_seconds}  # fmt: skip


def check_templates(templates: Sequence[str] | None) -> None:
    """Checks that every zero-shot template has exactly one ``{}`` for the class name.

    Raises:
        InputError: naming the first bad template.
    """
    for template in templates or []:
        try:
            filled = template.format("\0")
        except (IndexError, KeyError, ValueError):
            filled = None
        if filled is None or filled.count("\0") != 1:
            raise InputError(
                f"`--templates` {printable(repr(template))} must hold exactly one {{}} for the class name "
                "(write {{ and }} for literal braces)"
            )
