"""The result store of ``captum-gradeclip explain-dataset``: reading it, and writing its pieces atomically.

A store is a directory::

    manifest.json                  the run's configuration and, once complete, the summary
    shards/chunk-000000.safetensors   the results of one chunk of items (tensors + error rows)
    shards/chunk-000000.json          written after its shard: item range, sha256 of the shard, counts

A chunk is complete exactly when its ``.json`` exists, carries the sha256 of its own content (so an edited record is
detected), matches the manifest (its chunk number and item range) and names the sha256 of its shard. Every file is
written to a temporary name and renamed, so a killed run never leaves a torn file under a final name. A writing run
holds an exclusive lock on ``.lock`` in the store, so that two runs into one directory cannot damage each other.
:func:`open` refuses a store with missing or damaged chunks, naming them (or, with ``partial=True``, warns and reads
the rest). Only safetensors and JSON are read: no pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import Tensor

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
SHARDS = "shards"
LOCK = ".lock"
#: The store layout this version writes and reads.
FORMAT_VERSION = 2


class StoreError(ValueError):
    """A result store that is in use, holds another run, or is missing or damaged chunks."""


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Holds an exclusive lock on the store ``root`` (a directory that exists) for the body.

    Raises:
        StoreError: at once, if another process holds it.
    """
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise StoreError(
                    f"`out` {root} is in use by another run (process {owner}); wait for it to finish "
                    "(then run the same command to resume) or use another directory"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_temporary_files(root: Path) -> list[Path]:
    """Deletes the temporary files of killed runs in ``root`` and its shards; call it holding :func:`locked`."""
    stale = [*root.glob(".*.tmp-*"), *(root / SHARDS).glob(".*.tmp-*")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}"


def record_digest(record: dict) -> str:
    """The sha256 of a chunk record's content, without its own ``record_sha256`` field."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_chunk(root: Path, chunk: int, tensors: dict[str, Tensor], record: dict) -> None:
    """Writes one chunk's shard, then its completion record (with the shard's sha256 and its own)."""
    shards = root / SHARDS
    shard = shards / f"{chunk_name(chunk)}.safetensors"
    tmp = shard.with_name(f".{shard.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(tmp, shard)
    record = json.loads(json.dumps({**record, "chunk": chunk, "sha256": digest}))  # as it reads back
    atomic_write_json(shards / f"{chunk_name(chunk)}.json", {**record, "record_sha256": record_digest(record)})


def chunk_items(manifest: dict, chunk: int) -> list[int]:
    """The items of ``chunk`` according to the manifest."""
    size = manifest["chunk_size"]
    return list(range(chunk * size, min((chunk + 1) * size, manifest["items"])))


def _read_chunk(root: Path, chunk: int, manifest: dict | None) -> tuple[str | None, dict | None, bytes | None]:
    """``(problem, record, shard bytes)``: the problem is ``None`` for a complete, consistent chunk."""
    record_path = root / SHARDS / f"{chunk_name(chunk)}.json"
    shard_path = root / SHARDS / f"{chunk_name(chunk)}.safetensors"
    if not record_path.exists():
        return "record missing", None, None
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return "record unreadable", None, None
    if not isinstance(record, dict) or record.get("record_sha256") != record_digest(record):
        return "record edited or damaged (its sha256 does not match)", None, None
    if record.get("chunk") != chunk or (manifest is not None and record.get("items") != chunk_items(manifest, chunk)):
        return "record does not match the manifest", None, None
    if not shard_path.exists():
        return "shard missing", None, None
    data = shard_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return "shard damaged (its sha256 does not match)", None, None
    return None, record, data


def chunk_complete(root: Path, chunk: int, manifest: dict | None = None) -> bool:
    """Whether ``chunk`` has an intact completion record (matching ``manifest`` when given) and shard."""
    return _read_chunk(root, chunk, manifest)[0] is None


class ResultStore:
    """Read access to a result store; see :func:`open`.

    Args:
        root (str or Path): the store's directory.
        partial (bool, optional): see :func:`open`.

    Examples::

        >>> from captum_gradeclip.cli import dataset
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
        >>> dataset.main(["--images", str(tmp_path), "--pairs", str(tmp_path / "pairs.csv"),
        ...               "--out", str(tmp_path / "out")])  # what `captum-gradeclip explain-dataset` runs
        explained 1 items into ...
        >>> store = cg.results.open(tmp_path / "out")
        >>> for row in store:            # one dict per item, in item order
        ...     print(row["item"], row["text"], row.get("error"))
        0 a red square None
        >>> tensors = store.load()       # {'item', 'map', 'score', 'token_scores', ...} stacked over good items
        >>> tensors["map"].shape
        torch.Size([1, 8, 8])
    """

    def __init__(self, root: str | Path, partial: bool = False) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            raise FileNotFoundError(f"`root` is not a result store: {manifest} does not exist")
        try:
            self.manifest: dict = json.loads(manifest.read_text())
            chunks, items = self.manifest["chunks"], self.manifest["items"]
            format_version = self.manifest["format"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{manifest} is not a result store manifest (damaged or edited)") from None
        if format_version != FORMAT_VERSION:
            raise StoreError(
                f"{self.root} was written in store format {format_version}; this version reads format "
                f"{FORMAT_VERSION}: run explain-dataset again into a new directory"
            )
        if "chunk_size" not in self.manifest or chunks != -(-items // max(self.manifest["chunk_size"], 1)):
            raise StoreError(f"{manifest} is inconsistent: {items} items do not make {chunks} chunks")
        #: ``{chunk: reason}`` for every missing or damaged chunk (empty for a whole store).
        self.problems: dict[int, str] = {}
        for chunk in range(chunks):
            problem = _read_chunk(self.root, chunk, self.manifest)[0]
            if problem is not None:
                self.problems[chunk] = problem
        if self.problems:
            message = self._describe_problems()
            if not partial:
                raise StoreError(f"{message}; open it with partial=True to read the rest")
            warnings.warn(f"{message}; reading the rest", stacklevel=3)

    def _describe_problems(self) -> str:
        groups: list[list] = []  # [first chunk, last chunk, problem]: consecutive chunks with the same problem
        for chunk, problem in sorted(self.problems.items()):
            if groups and groups[-1][1] == chunk - 1 and groups[-1][2] == problem:
                groups[-1][1] = chunk
            else:
                groups.append([chunk, chunk, problem])
        parts = []
        for first, last, problem in groups:
            low, high = chunk_items(self.manifest, first)[0], chunk_items(self.manifest, last)[-1]
            chunks = f"chunk {first}" if first == last else f"chunks {first}-{last}"
            parts.append(f"{chunks} ({f'item {low}' if low == high else f'items {low}-{high}'}): {problem}")
        if len(parts) > 10:
            parts = [*parts[:10], f"and {len(parts) - 10} more (see .problems)"]
        missing = len(self.missing_items)
        return (
            f"result store {self.root} is missing {missing} of {self.manifest['items']} items "
            f"({len(self.problems)} of {self.manifest['chunks']} chunks missing or damaged: {'; '.join(parts)})"
        )

    @property
    def missing_items(self) -> list[int]:
        """The items of missing or damaged chunks, which iteration and :meth:`load` leave out."""
        return [i for chunk in sorted(self.problems) for i in chunk_items(self.manifest, chunk)]

    @property
    def complete(self) -> bool:
        """Whether every chunk is complete and intact."""
        return not self.problems

    def chunks(self) -> Iterator[tuple[dict[str, Tensor], dict]]:
        """Intact chunks in order, as ``(tensors, record)``; a chunk damaged since :func:`open` raises StoreError."""
        for chunk in range(self.manifest["chunks"]):
            loaded = self._chunk(chunk)
            if loaded is not None:
                yield loaded

    def _chunk(self, chunk: int) -> tuple[dict[str, Tensor], dict] | None:
        if chunk in self.problems:
            return None
        problem, record, data = _read_chunk(self.root, chunk, self.manifest)
        tensors: dict[str, Tensor] = {}
        if problem is None:
            try:
                tensors = load_bytes(data)  # type: ignore[arg-type]
            except (SafetensorError, ValueError) as error:
                problem = f"shard unreadable ({type(error).__name__})"
        if problem is None:
            errors = [int(i) for i, _ in record["errors"]]  # type: ignore[index]
            if sorted([*tensors["item"].tolist(), *errors]) != record["items"]:  # type: ignore[index]
                problem = "shard and record hold different items"
        if problem is not None:
            raise StoreError(f"chunk {chunk} of {self.root} changed since it was opened: {problem}")
        return tensors, record  # type: ignore[return-value]

    def __iter__(self) -> Iterator[dict]:
        for tensors, record in self.chunks():
            rows: dict[int, dict] = {}
            for i, item in enumerate(tensors["item"].tolist()):
                rows[item] = {"item": item, **{k: v[i] for k, v in tensors.items() if k != "item"}}
            for item, reason in record["errors"]:
                rows[item] = {"item": item, "error": reason}
            for item in sorted(rows):
                rows[item].update(record["meta"].get(str(item), {}))
                yield rows[item]

    def load(self) -> dict[str, Any]:
        """Every good item's results stacked (token scores padded with zeros), plus ``errors``."""
        parts: dict[str, list[Tensor]] = {}
        errors: list[tuple[int, str]] = []
        for tensors, record in self.chunks():
            for k, v in tensors.items():
                parts.setdefault(k, []).append(v)
            errors.extend((int(i), str(r)) for i, r in record["errors"])
        out: dict[str, Any] = {}
        for k, vs in parts.items():
            width = max(v.shape[-1] for v in vs) if vs[0].dim() == 2 and k.startswith("token") else None
            if width is not None:
                vs = [torch.nn.functional.pad(v, (0, width - v.shape[-1])) for v in vs]
            out[k] = torch.cat(vs)
        out.setdefault("item", torch.zeros(0, dtype=torch.long))  # no intact chunk
        out["errors"] = sorted(errors)
        return out

    def __len__(self) -> int:
        return sum(len(record["items"]) for _, record in self.chunks())

    def differences(self, other: ResultStore) -> list[str]:
        """Where this store's results differ from ``other``'s; empty when they are bit-identical.

        Compares chunk by chunk (one pair in memory at a time): which chunks are complete, their item ranges,
        their error rows and every tensor exactly. Use it to check that a ``torchrun`` run, a resumed run or a
        run on other hardware gave the same results as a reference run.

        Args:
            other (ResultStore): the store to compare with.

        Returns:
            *list[str]*: one line per difference, naming the chunk and the key.

        Examples::

            >>> from captum_gradeclip.cli import dataset
            >>> scene.image.save(tmp_path / "scene.png")
            >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
            >>> for out in ("a", "b"):
            ...     dataset.main(["--images", str(tmp_path), "--pairs", str(tmp_path / "pairs.csv"),
            ...                   "--out", str(tmp_path / out)])
            explained 1 items into ...
            explained 1 items into ...
            >>> cg.results.open(tmp_path / "a").differences(cg.results.open(tmp_path / "b"))
            []
        """
        if not isinstance(other, ResultStore):
            raise TypeError(f"`other` must be a ResultStore (from cg.results.open); got {type(other).__name__}")
        found = []
        for chunk in range(max(self.manifest["chunks"], other.manifest["chunks"])):
            mine, theirs = self._chunk(chunk), other._chunk(chunk)
            if mine is None or theirs is None:
                if mine is not theirs:
                    found.append(f"chunk {chunk}: complete in only one store")
                continue
            (tensors_a, rec_a), (tensors_b, rec_b) = mine, theirs
            for field in ("items", "errors"):
                if rec_a[field] != rec_b[field]:
                    found.append(f"chunk {chunk}: {field} differ")
            if tensors_a.keys() != tensors_b.keys():
                found.append(f"chunk {chunk}: keys {sorted(tensors_a)} against {sorted(tensors_b)}")
                continue
            found += [f"chunk {chunk}: {k} differs" for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])]
        return found


def open(root: str | Path, partial: bool = False) -> ResultStore:
    """Opens a result store written by ``captum-gradeclip explain-dataset``, checking every chunk.

    Args:
        root (str or Path): the output directory of the run.
        partial (bool, optional): read a store with missing or damaged chunks (a run still going, or killed):
            warn, naming them, and leave their items out (see :attr:`ResultStore.missing_items`). Default:
            False, such a store raises :class:`StoreError` naming the missing chunks and items.

    Returns:
        *ResultStore*: iterate it for one dict per item, or call ``load()`` for stacked tensors.

    Raises:
        StoreError: for a store with missing or damaged chunks (unless ``partial``), an edited chunk record,
            or a manifest that is not consistent.

    Examples::

        >>> from captum_gradeclip.cli import dataset
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
        >>> dataset.main(["--images", str(tmp_path), "--pairs", str(tmp_path / "pairs.csv"),
        ...               "--out", str(tmp_path / "out")])  # what `captum-gradeclip explain-dataset` runs
        explained 1 items into ...
        >>> store = cg.results.open(tmp_path / "out")
        >>> store.load()["map"].shape   # one (h, w) map per good item
        torch.Size([1, 8, 8])
    """
    return ResultStore(root, partial=partial)
