"""The result store of a dataset run (:func:`captum_gradeclip.explain_dataset`, ``captum-gradeclip explain-dataset``):
Apache Parquet parts, read safely.

A store is a folder of parts, one per chunk of items::

    part-000000.parquet     items 0 .. chunk_size-1: one row per item, good or not
    part-000001.parquet     ...

Each part is written with pyarrow to a temporary name in the store (``.part-000001.parquet.tmp-...``), fsynced and
renamed into place, with page checksums on. Its key-value metadata (key ``captum_gradeclip``, JSON) holds the format
version, the run's whole configuration (model, method, mode, score, templates, dtype, the pairs file's sha256, ...),
the total item count, the chunk size, the part's number and the map's grid shape. The columns are ``item``,
``image``, ``text``, ``label``, ``score``, ``map`` (a fixed-size list of ``h * w`` float32, row-major), ``token_ids``,
``token_scores``, ``words``, ``word_scores``, ``label_index``, ``prediction``, ``image_bytes``, ``image_mtime_ns`` and
``error`` (a short reason for an error row; null for a good one). Any Parquet reader reads it without this package:
``pandas.read_parquet(path)``, ``pyarrow.dataset.dataset(path)``, DuckDB's ``SELECT * FROM 'path/*.parquet'``,
``datasets.load_dataset("parquet", data_files="path/*.parquet")``.

:func:`open` checks that every item is present exactly once and that every part holds the same run; otherwise it
raises :class:`StoreError` naming what is missing, duplicated or inconsistent (or, with ``partial=True``, warns and
reads the rest). The store may live in a folder that someone else controls: a symbolic link is never followed, only
regular files under a size limit are read (no FIFO or device is ever opened), crafted metadata is a
:class:`StoreError`, and nothing is written, truncated or deleted that this store did not create.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import mmap
import os
import re
import secrets
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from captum_gradeclip.images import printable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]  # a module or None: no lock off POSIX

#: The store layout this version writes and reads (1 and 2 were a JSON manifest with safetensors shards).
FORMAT_VERSION = 3
#: The key of a part's key-value metadata.
METADATA_KEY = "captum_gradeclip"
#: The lock a writing run holds, inside the store.
LOCK = ".captum-gradeclip.lock"
LOCK_HEADER = b"captum-gradeclip store lock\n"
#: The largest part file read (a bigger one is refused, never read).
MAX_PART_BYTES = 8 << 30
MAX_METADATA_BYTES = 1 << 20
#: The most items a store may claim.
MAX_ITEMS = 10**10
PART = re.compile(r"part-(\d{6,12})\.parquet")
TEMPORARY = re.compile(r"\.part-(\d{6,12})\.parquet\.tmp-\d+-[0-9a-f]{8}")
OLD_MANIFEST = "manifest.json"
META_KEYS = {"format", "config", "items", "chunk_size", "part", "map_shape"}
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

SCHEMA = pa.schema(
    [
        ("item", pa.int64()),
        ("image", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("token_ids", pa.list_(pa.int64())),
        ("token_scores", pa.list_(pa.float32())),
        ("words", pa.list_(pa.string())),
        ("word_scores", pa.list_(pa.float32())),
        ("label_index", pa.int32()),
        ("prediction", pa.int32()),
        ("image_bytes", pa.int64()),
        ("image_mtime_ns", pa.int64()),
        ("error", pa.string()),
    ]
)


class StoreError(ValueError):
    """A result store that is in use, holds another run, is not one of ours, or is missing or damaged parts."""


def part_name(part: int) -> str:
    return f"part-{part:06d}.parquet"


# ----------------------------------------------------------------------------------------------- the filesystems


class LocalFolder:
    """A store folder on the local disk, read and written without following a symbolic link."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.label = printable(self.root)

    def exists(self) -> bool:
        return os.path.lexists(self.root)

    def make(self) -> None:
        if os.path.islink(self.root):
            raise StoreError(f"`out` {self.label} is a symbolic link; give the folder itself")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise StoreError(f"`out` {self.label} exists and is not a directory")

    def entries(self) -> dict[str, str]:
        """``{name: kind}`` of the folder's entries; kind is ``file``, ``dir``, ``link`` or ``other`` (FIFO, device,
        socket), from ``lstat``: nothing is opened."""
        found = {}
        with os.scandir(self.root) as listing:
            for entry in listing:
                mode = entry.stat(follow_symlinks=False).st_mode
                kind = ("file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode)
                        else "link" if stat.S_ISLNK(mode) else "other")  # fmt: skip
                found[entry.name] = kind
        return found

    def read(self, name: str, limit: int = MAX_PART_BYTES) -> pa.Buffer:
        """The bytes of a regular file of the folder (memory-mapped), refused unless it is one, under ``limit``."""
        try:
            fd = os.open(self.root / name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK)
        except OSError as error:
            raise _Bad("a symbolic link" if os.path.islink(self.root / name) else _reason(error)) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Bad("not a regular file")
            if info.st_size > limit:
                raise _Bad(f"{info.st_size} bytes, over the limit of {limit}")
            if info.st_size == 0:
                raise _Bad("empty")
            return pa.py_buffer(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)

    def write_atomic(self, name: str, data: pa.Buffer | bytes) -> None:
        """Writes ``name`` through a new temporary file of its own (never an existing one), fsync and rename."""
        tmp = f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(self.root / tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o644)
        try:
            with builtins.open(fd, "wb", closefd=False) as f:
                f.write(memoryview(data))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.root / tmp)
            raise
        os.close(fd)
        os.replace(self.root / tmp, self.root / name)
        with contextlib.suppress(OSError):  # the rename itself, durable
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def remove(self, name: str) -> None:
        os.unlink(self.root / name)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the store's exclusive lock (:data:`LOCK`, a file it creates) for the body.

        Raises:
            StoreError: at once, if another process holds it, or ``LOCK`` is not a lock file of ours.
        """
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK, 0o644)
        except OSError as error:
            kind = "a symbolic link" if os.path.islink(path) else _reason(error)
            raise StoreError(f"`out` {self.label}: {LOCK} is {kind}, not a lock of this store; remove it") from None
        try:
            info = os.fstat(fd)
            head = os.pread(fd, len(LOCK_HEADER), 0) if stat.S_ISREG(info.st_mode) else b""
            if not stat.S_ISREG(info.st_mode) or (info.st_size and head != LOCK_HEADER) or info.st_size > 200:
                raise StoreError(f"`out` {self.label}: {LOCK} is not a lock of this store; remove it")
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = os.pread(fd, 32, len(LOCK_HEADER)).decode(errors="replace").strip() or "?"
                    raise StoreError(
                        f"`out` {self.label} is in use by another run (process {printable(owner)}); wait for it to "
                        "finish (then run the same command to resume) or use another directory"
                    ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, LOCK_HEADER + f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock


class ArrowFolder:
    """A store folder on a ``pyarrow.fs`` filesystem (an fsspec one is wrapped): no locking, no symbolic links."""

    def __init__(self, filesystem: Any, root: str) -> None:
        import pyarrow.fs as pafs

        if not isinstance(filesystem, pafs.FileSystem):  # an fsspec filesystem
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        self.fs, self.root, self.label = filesystem, str(root).rstrip("/"), printable(root)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.root).type != pafs.FileType.NotFound

    def make(self) -> None:
        import pyarrow.fs as pafs

        self.fs.create_dir(self.root, recursive=True)
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            raise StoreError(f"`out` {self.label} exists and is not a directory")

    def entries(self) -> dict[str, str]:
        import pyarrow.fs as pafs

        kinds = {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return {info.base_name: kinds.get(info.type, "other") for info in infos}

    def read(self, name: str, limit: int = MAX_PART_BYTES) -> pa.Buffer:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self._path(name))
        if info.type != pafs.FileType.File:
            raise _Bad("not a regular file")
        if info.size is not None and info.size > limit:
            raise _Bad(f"{info.size} bytes, over the limit of {limit}")
        with self.fs.open_input_stream(self._path(name)) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise _Bad(f"over the limit of {limit} bytes")
        if not data:
            raise _Bad("empty")
        return pa.py_buffer(data)

    def write_atomic(self, name: str, data: pa.Buffer | bytes) -> None:
        tmp = self._path(f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, self._path(name))

    def remove(self, name: str) -> None:
        self.fs.delete_file(self._path(name))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield  # object stores have no locks: one writing run per store is the caller's to ensure


Folder = LocalFolder | ArrowFolder


def folder(out: str | Path | Folder, filesystem: Any = None) -> Folder:
    """The store folder ``out``: a local path, a URL of an fsspec filesystem (``memory://...``, ``s3://...``), or a
    path on ``filesystem`` (a ``pyarrow.fs.FileSystem`` or an fsspec filesystem)."""
    if isinstance(out, LocalFolder | ArrowFolder):
        return out
    if filesystem is not None:
        import pyarrow.fs as pafs

        if isinstance(filesystem, pafs.LocalFileSystem):
            return LocalFolder(out)
        return ArrowFolder(filesystem, str(out))
    if isinstance(out, str) and "://" in out and not out.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(out)
        return ArrowFolder(fs, path)
    return LocalFolder(str(out).removeprefix("file://"))


class _Bad(Exception):
    """Why one file is not an intact part (internal)."""


def _reason(error: OSError) -> str:
    import errno

    if error.errno == errno.ELOOP:
        return "a symbolic link"
    return error.strerror or type(error).__name__


# -------------------------------------------------------------------------------------------------- one part


@dataclass(frozen=True)
class Part:
    """One intact part: its number, metadata and number of rows (its items, in order, from ``number * chunk_size``)."""

    number: int
    meta: dict
    rows: int
    parquet: pq.ParquetFile  # over the file's bytes, read once (memory-mapped), checksums verified

    @property
    def signature(self) -> str:
        """What every part of one store shares."""
        return json.dumps({k: self.meta[k] for k in ("format", "config", "items", "chunk_size")}, sort_keys=True)

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        return self.parquet.read(
            columns=columns, use_threads=False
        )  # many small parts: threads cost more than they give


def _int(meta: dict, key: str, low: int, high: int) -> int:
    value = meta.get(key)
    if type(value) is not int or not low <= value <= high:
        raise _Bad(f"metadata `{key}` is {printable(repr(value))[:40]}, not an integer in [{low}, {high}]")
    return value


def parse_metadata(raw: bytes | None) -> dict:
    """A part's metadata, checked: known keys only, each of its type and in its range."""
    if raw is None:
        raise _Bad(f"no `{METADATA_KEY}` metadata: not a part of a result store")
    if len(raw) > MAX_METADATA_BYTES:
        raise _Bad(f"metadata of {len(raw)} bytes, over the limit of {MAX_METADATA_BYTES}")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Bad("metadata is not JSON, or nested too deep") from None
    if not isinstance(meta, dict):
        raise _Bad("metadata is not a JSON object")
    if set(meta) != META_KEYS:
        unknown, absent = sorted(set(meta) - META_KEYS), sorted(META_KEYS - set(meta))
        raise _Bad(f"metadata keys differ (unexpected {unknown}, absent {absent})")
    if meta["format"] != FORMAT_VERSION or type(meta["format"]) is not int:
        raise _Bad(f"store format {printable(meta['format'])[:20]}; this version reads format {FORMAT_VERSION}")
    if not isinstance(meta["config"], dict):
        raise _Bad("metadata `config` is not a JSON object")
    items = _int(meta, "items", 1, MAX_ITEMS)
    size = _int(meta, "chunk_size", 1, MAX_ITEMS)
    _int(meta, "part", 0, (items - 1) // size)
    shape = meta["map_shape"]
    if shape is not None and not (
        isinstance(shape, list) and len(shape) == 2 and all(type(s) is int and 0 < s <= 4096 for s in shape)
    ):
        raise _Bad(f"metadata `map_shape` is {printable(repr(shape))[:40]}, not [height, width]")
    return meta


def read_part(store: Folder, name: str, number: int) -> Part:
    """The part ``name``, checked: metadata, schema, page checksums and its items (exactly its range, in order).

    Raises:
        _Bad: saying what is wrong.
    """
    buffer = store.read(name)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(buffer), page_checksum_verification=True)
        schema = parquet.schema_arrow
        meta = parse_metadata((schema.metadata or {}).get(METADATA_KEY.encode()))
        if meta["part"] != number:
            raise _Bad(f"holds part {meta['part']} (a file renamed or copied)")
        first = number * meta["chunk_size"]
        rows = min(meta["chunk_size"], meta["items"] - first)
        for field in SCHEMA:
            if schema.get_field_index(field.name) < 0 or schema.field(field.name).type != field.type:
                raise _Bad(f"column `{field.name}` is missing or not of type {field.type}")
        shape = meta["map_shape"]
        expected = map_type(shape)
        if shape is not None and (schema.get_field_index("map") < 0 or schema.field("map").type != expected):
            raise _Bad(f"column `map` is not a list of {shape[0]} x {shape[1]} float32 (its metadata's shape)")
        if parquet.metadata.num_rows != rows:
            raise _Bad(f"holds {parquet.metadata.num_rows} rows; its range has {rows}")
        items = parquet.read(columns=["item"], use_threads=False).column(0).to_numpy()
    except (pa.ArrowException, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _Bad(f"unreadable ({printable(first_line)})") from None
    if not np.array_equal(items, np.arange(first, first + rows)):
        outside = sorted(set(items.tolist()) - set(range(first, first + rows)))
        duplicated = [i for i, n in Counter(items.tolist()).items() if n > 1]
        detail = (
            f"items {_ranges(outside)} outside its range" if outside
            else f"items {_ranges(sorted(duplicated))} twice" if duplicated
            else "its items out of order or some missing"
        )  # fmt: skip
        raise _Bad(f"holds {detail}")
    return Part(number, meta, rows, parquet)


def identifiably_ours(store: Folder, name: str) -> bool:
    """Whether the file ``name`` is a regular file whose Parquet footer carries this store's metadata: a part this
    store wrote (perhaps damaged since), which a run may replace and ``fresh`` may remove."""
    try:
        buffer = store.read(name)
        schema = pq.ParquetFile(pa.BufferReader(buffer)).schema_arrow
        parse_metadata((schema.metadata or {}).get(METADATA_KEY.encode()))
    except (_Bad, pa.ArrowException, OSError):
        return False
    return True


def _ranges(numbers: Sequence[int], limit: int = 10) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (at most ``limit`` ranges, then how many more)."""
    groups: list[list[int]] = []
    for n in numbers:
        if groups and groups[-1][1] == n - 1:
            groups[-1][1] = n
        else:
            groups.append([n, n])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in groups[:limit]]
    if len(groups) > limit:
        text.append(f"and {len(groups) - limit} more ranges")
    return ", ".join(text)


def _text(value: str | None) -> str | None:
    """A string Parquet can hold (UTF-8): lone surrogates written as escapes."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def table_of(rows: list[dict], shape: tuple[int, int] | None) -> pa.Table:
    """The rows (dicts of column values; ``map`` a numpy array of ``h * w`` values) as a table of the store's schema,
    with a ``map`` column of ``h * w`` float32 per row: NaN where a row has none (an error row). The column is a
    fixed-size list without nulls, which readers decode several times faster than a nullable one."""
    columns = {}
    for field in SCHEMA:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_string(field.type):
            values = [_text(v) for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    width = shape[0] * shape[1] if shape else 0
    flat = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if "map" in row and row["map"].size == width:
            flat[i] = row["map"]
    maps = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), type=map_type(shape))
    schema = pa.schema([*SCHEMA, pa.field("map", maps.type, nullable=False)])
    return pa.table([*columns.values(), maps], schema=schema)


def map_type(shape: Sequence[int] | None) -> pa.DataType:
    """The ``map`` column's type: a fixed-size list of ``h * w`` float32 (no null values)."""
    width = shape[0] * shape[1] if shape else 1
    return pa.list_(pa.field("item", pa.float32(), nullable=False), width)


def write_part(store: Folder, number: int, table: pa.Table, meta: dict) -> None:
    """Writes ``table`` as part ``number`` (page checksums on), with ``meta`` (see :func:`parse_metadata`)."""
    meta = {**meta, "part": number}
    parse_metadata(json.dumps(meta).encode())  # never write what would not read back
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, write_page_checksum=True, compression={"map": "none"} | dict.fromkeys(SCHEMA.names, "snappy"),
        use_dictionary=["image", "text", "label", "error"],
    )  # fmt: skip
    store.write_atomic(part_name(number), sink.getvalue())


# --------------------------------------------------------------------------------------------- the whole store


@dataclass
class Scan:
    """What a store folder holds: intact parts, and why each other part-named or stray entry is not one."""

    parts: dict[int, Part]
    problems: dict[str, str]  # entry name -> reason
    temporary: list[str]  # temporary files of killed runs (regular files with our temporary names)
    others: list[str]  # entries that are neither parts nor ours
    old_format: bool


def scan(store: Folder) -> Scan:
    """Lists and checks every entry of the store folder (opening only regular files with part names)."""
    parts: dict[int, Part] = {}
    problems: dict[str, str] = {}
    temporary, others = [], []
    entries = store.entries()
    candidates = []
    for name, kind in sorted(entries.items()):
        match = PART.fullmatch(name)
        if match:
            if kind == "file":
                candidates.append((name, int(match.group(1))))
            else:
                problems[name] = {"link": "a symbolic link", "dir": "a directory"}.get(kind, "not a regular file")
        elif TEMPORARY.fullmatch(name) and kind == "file":
            temporary.append(name)
        elif name.endswith(".parquet"):
            problems[name] = "a Parquet file that is not a part of this store (readers of *.parquet would count it)"
        elif name not in (LOCK,) and not name.startswith(".write-test.tmp-"):
            others.append(name)

    def check(candidate: tuple[str, int]) -> Part | str:
        try:
            return read_part(store, *candidate)
        except _Bad as bad:
            return str(bad)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # pyarrow releases the GIL
        for (name, number), found in zip(candidates, pool.map(check, candidates), strict=True):
            if isinstance(found, Part):
                parts[number] = found
            else:
                problems[name] = found
    problems = dict(sorted(problems.items()))
    old = entries.get(OLD_MANIFEST) == "file" and entries.get("shards") == "dir"
    return Scan(parts, problems, temporary, others, old)


def old_store_message(label: str) -> str:
    return (
        f"{label} is a result store of an earlier version (manifest.json and safetensors shards), which this version "
        f"does not read; convert it with `python -m captum_gradeclip.runs.convert {label} NEW_FOLDER` (or run "
        "explain-dataset again into a new --out)"
    )


class ResultStore:
    """Read access to a result store; see :func:`open`.

    Examples::

        >>> from captum_gradeclip.cli import load_model
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
        >>> store = cg.explain_dataset(load_model("shapes"), tmp_path / "pairs.csv", images=tmp_path,
        ...                            out=tmp_path / "out", progress=False)
        >>> for row in store:            # one dict per item, in item order
        ...     print(row["item"], row["text"], row.get("error"))
        0 a red square None
        >>> store.maps().shape           # every good item's map, one tensor
        torch.Size([1, 8, 8])
    """

    #: What the run that wrote the store did here (items done, seconds, rank, world size): set on the store that
    #: :func:`~captum_gradeclip.explain_dataset` returns, absent on one opened otherwise.
    run: dict[str, Any]

    def __init__(self, root: str | Path | Folder, partial: bool = False, filesystem: Any = None) -> None:
        self.folder = folder(root, filesystem)
        self.root = root if isinstance(root, str | Path) else self.folder.root
        label = self.folder.label
        if not self.folder.exists():
            raise FileNotFoundError(f"`root` {label} does not exist")
        found = scan(self.folder)
        if found.old_format and not found.parts:
            raise StoreError(old_store_message(label))
        if not found.parts:
            detail = "; ".join(f"{n}: {r}" for n, r in list(found.problems.items())[:5])
            raise StoreError(f"{label} holds no intact part of a result store" + (f" ({detail})" if detail else ""))
        counts = Counter(p.signature for p in found.parts.values())
        signature = counts.most_common(1)[0][0]
        problems = dict(found.problems)
        for number, part in list(found.parts.items()):
            if part.signature != signature:
                changed = _changed(json.loads(signature), json.loads(part.signature))
                problems[part_name(number)] = f"from another run ({', '.join(changed)} differ)"
                del found.parts[number]
        self.parts = found.parts
        reference = next(iter(self.parts.values())).meta
        #: The run's configuration, item count and chunk size, as every part records them.
        self.meta = {k: reference[k] for k in ("format", "config", "items", "chunk_size")}
        self.config: dict = reference["config"]
        shapes = {tuple(p.meta["map_shape"]) for p in self.parts.values() if p.meta["map_shape"]}
        if len(shapes) > 1:
            problems["map"] = f"parts disagree on the map's shape ({sorted(shapes)})"
            raise StoreError(f"result store {label} is inconsistent: {problems['map']}")
        self.map_shape: tuple[int, int] | None = shapes.pop() if shapes else None
        items, size = self.meta["items"], self.meta["chunk_size"]
        #: ``[(first, last)]`` item ranges in no intact part (merged), bounded however many items the store claims.
        self.missing_ranges = _missing_ranges(sorted(self.parts), items, size)
        #: Why each file that should be (or looks like) an intact part of this run is not one.
        self.problems = problems
        if problems or self.missing_ranges:
            message = self._describe()
            if not partial:
                raise StoreError(f"{message}; open it with partial=True to read the rest")
            warnings.warn(f"{message}; reading the rest", stacklevel=3)

    @property
    def missing_items(self) -> list[int]:
        """The items that iteration, :meth:`load` and :meth:`maps` leave out."""
        return [i for first, last in self.missing_ranges for i in range(first, last + 1)]

    def _describe(self) -> str:
        label, items = self.folder.label, self.meta["items"]
        missing = sum(last - first + 1 for first, last in self.missing_ranges)
        text = [f"result store {label} is missing {missing} of {items} items"]
        if self.missing_ranges:
            shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.missing_ranges[:10])
            more = f" and {len(self.missing_ranges) - 10} more ranges" if len(self.missing_ranges) > 10 else ""
            text.append(f"items {shown}{more} are in no intact part")
        problems = list(self.problems.items())
        text += [f"{printable(n)}: {r}" for n, r in problems[:10]]
        if len(problems) > 10:
            text.append(f"and {len(problems) - 10} more (see .problems)")
        return "; ".join(text)

    @property
    def complete(self) -> bool:
        """Whether every item is present, in intact parts of one run."""
        return not self.missing_ranges and not self.problems

    def __len__(self) -> int:
        return sum(p.rows for p in self.parts.values())

    def _tables(self, columns: Sequence[str] | None = None, parallel: bool = False) -> Iterator[tuple[Part, pa.Table]]:
        """``(part, table)`` in part order; ``parallel``: parts decoded by a thread pool (pyarrow releases the GIL),
        a few ahead of the caller."""

        def read(part: Part) -> pa.Table:
            try:
                table = part.table(columns)
                table.validate(full=True)  # no page checksum guards a part rewritten without: UTF-8, offsets
                return table
            except (pa.ArrowException, OSError) as error:
                raise StoreError(f"{part_name(part.number)} of {self.folder.label} is damaged: {error}") from None

        parts = [self.parts[n] for n in sorted(self.parts)]
        if not parallel or len(parts) < 2:
            for part in parts:
                yield part, read(part)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            yield from zip(parts, pool.map(read, parts), strict=True)

    def __iter__(self) -> Iterator[dict]:
        """One dict per item, in item order: null columns left out; ``map`` a ``(h, w)`` tensor, token columns
        tensors; an error row has ``error``."""
        for part, table in self._tables():
            shape = part.meta["map_shape"]
            for row in table.to_pylist():
                out = {k: v for k, v in row.items() if v is not None}
                if "error" in out:
                    out.pop("map", None)  # an error row's map is NaN: it has none
                if "map" in out and shape:
                    out["map"] = torch.tensor(out["map"], dtype=torch.float32).view(*shape)
                for key in ("token_scores", "word_scores"):
                    if key in out:
                        out[key] = torch.tensor(out[key], dtype=torch.float32)
                if "token_ids" in out:
                    out["token_ids"] = torch.tensor(out["token_ids"], dtype=torch.long)
                yield out

    def maps(self) -> Tensor:
        """Every good item's map, ``(N, h, w)`` float32 in item order, read column-wise in one call."""
        if self.map_shape is None:
            return torch.zeros(0, 0, 0)
        width = self.map_shape[0] * self.map_shape[1]
        blocks = []  # (maps of every row, which rows are good): views of the column, no copy yet
        for part, table in self._tables(["map", "error"], parallel=True):
            column = table.column("map").combine_chunks()
            flat = column.values.to_numpy(zero_copy_only=False)
            if flat.size != len(column) * width:
                raise StoreError(f"{part_name(part.number)}: its maps do not have {width} values each")
            blocks.append((flat.reshape(len(column), width), table.column("error").is_null().to_numpy()))
        out = np.empty((sum(int(good.sum()) for _, good in blocks), width), dtype=np.float32)
        position = 0
        for rows, good in blocks:  # one copy into the result
            n = int(good.sum())
            if n == len(good):
                out[position : position + n] = rows
            else:
                np.compress(good, rows, axis=0, out=out[position : position + n])
            position += n
        return torch.from_numpy(out).view(-1, *self.map_shape)

    def load(self) -> dict[str, Any]:
        """Every good item's results stacked: ``item``, ``map``, ``score`` and, where the run has them,
        ``token_ids``, ``token_scores`` (padded with zeros), ``label``, ``prediction``; plus ``errors``, the error
        rows as ``[(item, reason)]``."""
        columns = ["item", "score", "token_ids", "token_scores", "label_index", "prediction", "error"]
        out: dict[str, list] = {k: [] for k in columns}
        for _, table in self._tables(columns):
            rows = table.to_pydict()
            for k in columns:
                out[k].extend(rows[k])
        good = [i for i, e in enumerate(out["error"]) if e is None]
        result: dict[str, Any] = {
            "item": torch.tensor([out["item"][i] for i in good], dtype=torch.long),
            "map": self.maps(),
            "score": torch.tensor([out["score"][i] for i in good], dtype=torch.float32),
        }
        for key, name, dtype in (("token_ids", "token_ids", torch.long), ("token_scores", "token_scores",
                                 torch.float32), ("label_index", "label", torch.long),
                                 ("prediction", "prediction", torch.long)):  # fmt: skip
            values = [out[key][i] for i in good]
            if good and all(v is not None for v in values):
                if isinstance(values[0], list):
                    width = max(len(v) for v in values)
                    values = [v + [0] * (width - len(v)) for v in values]
                result[name] = torch.tensor(values, dtype=dtype)
        result["errors"] = [(out["item"][i], out["error"][i]) for i, e in enumerate(out["error"]) if e is not None]
        return result

    def summary(self) -> dict:
        """``{"items": n, "errors": n, "error_reasons": {reason: n}}``: reasons are the text before a colon."""
        reasons: Counter[str] = Counter()
        for _, table in self._tables(["error"]):
            reasons.update(e.split(":")[0] for e in table.column(0).drop_null().to_pylist())
        return {"items": len(self), "errors": sum(reasons.values()), "error_reasons": dict(sorted(reasons.items()))}

    def differences(self, other: ResultStore, rtol: float = 0.0) -> list[str]:
        """Where this store's results differ from ``other``'s; empty when they are bit-identical (or, with
        ``rtol``, when their numbers agree within it).

        Compares part by part (one pair in memory at a time), every column but the image files' size and time.

        Args:
            other (ResultStore): the store to compare with.
            rtol (float, optional): the relative tolerance of the floating-point columns (scores, maps, token and
                word scores), relative to each value and to the column's largest magnitude, e.g. ``1e-5`` for runs
                with other thread counts, whose sums round differently; the other columns must be equal. Default: 0
                (bit-identical).

        Returns:
            *list[str]*: one line per difference, naming the part and the column.

        Examples::

            >>> from captum_gradeclip.cli import load_model
            >>> scene.image.save(tmp_path / "scene.png")
            >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
            >>> loaded = load_model("shapes")
            >>> a, b = (cg.explain_dataset(loaded, tmp_path / "pairs.csv", images=tmp_path, out=tmp_path / name,
            ...                            progress=False) for name in "ab")
            >>> a.differences(b)
            []
        """
        if not isinstance(other, ResultStore):
            raise TypeError(f"`other` must be a ResultStore (from cg.results.open); got {type(other).__name__}")
        found = []
        columns = [n for n in SCHEMA.names if not n.startswith("image_")] + ["map"]
        for number in sorted(set(self.parts) | set(other.parts)):
            mine, theirs = self.parts.get(number), other.parts.get(number)
            if mine is None or theirs is None:
                found.append(f"part {number}: intact in only one store")
                continue
            a, b = mine.table(columns), theirs.table(columns)
            found += [f"part {number}: {c} differs" for c in columns if not _same(a.column(c), b.column(c), rtol)]
        return found


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray, rtol: float = 0.0) -> bool:
    """Whether two columns are equal, NaN equal to NaN (an error row's map); floats within ``rtol``."""
    if a.type != b.type or len(a) != len(b):
        return False
    x, y = a.combine_chunks(), b.combine_chunks()
    while pa.types.is_list(x.type) or pa.types.is_fixed_size_list(x.type):  # the same lengths, then the values
        if not pa.types.is_fixed_size_list(x.type) and x.offsets != y.offsets:
            return False
        x, y = x.flatten(), y.flatten()
    if pa.types.is_floating(x.type):
        values = [v.to_numpy(zero_copy_only=False) for v in (x, y)]
        if len(values[0]) != len(values[1]):
            return False
        if not rtol:
            return bool(np.array_equal(*values, equal_nan=True))  # type: ignore[misc]  # *values: the two arrays
        finite = np.abs(values[0][np.isfinite(values[0])])
        scale = float(finite.max()) if finite.size else 0.0  # near-zero values: within rtol of the column's largest
        return bool(np.allclose(*values, rtol=rtol, atol=rtol * scale, equal_nan=True))  # type: ignore[misc]  # *values: the two arrays
    return a.equals(b)


def _missing_ranges(present: list[int], items: int, size: int) -> list[tuple[int, int]]:
    """The item ranges of the parts not in ``present`` (sorted part numbers), merged: O(len(present))."""
    ranges, previous = [], -1
    for n in [*present, -(-items // size)]:
        if n > previous + 1:
            ranges.append(((previous + 1) * size, min(n * size, items) - 1))
        previous = n
    return ranges


def _changed(a: dict, b: dict) -> list[str]:
    changed = [k for k in ("format", "items", "chunk_size") if a.get(k) != b.get(k)]
    old, new = a.get("config") or {}, b.get("config") or {}
    return changed + sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def open(root: str | Path, partial: bool = False, filesystem: Any = None) -> ResultStore:
    """Opens a result store, checking every part: each item present exactly once, every part of the same run.

    Args:
        root (str or Path): the store's folder, or the URL of one on an fsspec filesystem (``memory://out``).
        partial (bool, optional): read a store with missing, damaged or foreign parts (a run still going, or
            killed): warn, naming them, and leave their items out (see :attr:`ResultStore.missing_items`).
            Default: False, such a store raises :class:`StoreError`.
        filesystem (optional): a ``pyarrow.fs.FileSystem`` or fsspec filesystem that ``root`` is a path on.

    Returns:
        *ResultStore*: iterate it for one dict per item, :meth:`~ResultStore.maps` for every map as one tensor,
        :meth:`~ResultStore.load` for every column stacked.

    Raises:
        StoreError: a store with missing, damaged, foreign or inconsistent parts (unless ``partial``), crafted
            metadata, or a store of an earlier format (the message says how to convert it).
        FileNotFoundError: ``root`` does not exist.

    Examples::

        >>> from captum_gradeclip.cli import load_model
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
        >>> _ = cg.explain_dataset(load_model("shapes"), tmp_path / "pairs.csv", images=tmp_path,
        ...                        out=tmp_path / "out", progress=False)
        >>> store = cg.results.open(tmp_path / "out")
        >>> store.load()["map"].shape   # one (h, w) map per good item
        torch.Size([1, 8, 8])
    """
    return ResultStore(root, partial=partial, filesystem=filesystem)
