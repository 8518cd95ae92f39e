"""The result store of ``captum-gradeclip explain-dataset``: reading it, and writing its pieces atomically.

A store is a directory::

    manifest.json                  the run's configuration and, once complete, the summary
    shards/chunk-000000.safetensors   the results of one chunk of items (tensors + error rows)
    shards/chunk-000000.json          written after its shard: item range, sha256 of the shard, counts

A chunk is complete exactly when its ``.json`` exists and names the sha256 of its shard. Every file is written to
a temporary name and renamed, so a killed run never leaves a torn file under a final name. Only safetensors and
JSON are read: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

MANIFEST = "manifest.json"
SHARDS = "shards"


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


def write_chunk(root: Path, chunk: int, tensors: dict[str, Tensor], record: dict) -> None:
    """Writes one chunk's shard, then its completion record (with the shard's sha256)."""
    shards = root / SHARDS
    shard = shards / f"{chunk_name(chunk)}.safetensors"
    tmp = shard.with_name(f".{shard.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(tmp, shard)
    atomic_write_json(shards / f"{chunk_name(chunk)}.json", {**record, "chunk": chunk, "sha256": digest})


def chunk_complete(root: Path, chunk: int) -> bool:
    """Whether ``chunk`` has a completion record whose sha256 matches its shard."""
    record = root / SHARDS / f"{chunk_name(chunk)}.json"
    shard = root / SHARDS / f"{chunk_name(chunk)}.safetensors"
    if not record.exists() or not shard.exists():
        return False
    try:
        digest = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    return hashlib.sha256(shard.read_bytes()).hexdigest() == digest


class ResultStore:
    """Read access to a result store; see :func:`open`.

    Args:
        root (str or Path): the store's directory.

    Examples::

        >>> from captum_gradeclip import dataset
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

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            raise FileNotFoundError(f"`root` is not a result store: {manifest} does not exist")
        self.manifest: dict = json.loads(manifest.read_text())

    @property
    def complete(self) -> bool:
        """Whether the run finished (every chunk complete)."""
        return all(chunk_complete(self.root, c) for c in range(self.manifest["chunks"]))

    def chunks(self) -> Iterator[tuple[dict[str, Tensor], dict]]:
        """Complete chunks in order, as ``(tensors, record)``; a damaged chunk raises ValueError."""
        for chunk in range(self.manifest["chunks"]):
            loaded = self._chunk(chunk)
            if loaded is not None:
                yield loaded

    def _chunk(self, chunk: int) -> tuple[dict[str, Tensor], dict] | None:
        record_path = self.root / SHARDS / f"{chunk_name(chunk)}.json"
        if not record_path.exists():
            return None
        if not chunk_complete(self.root, chunk):
            raise ValueError(f"chunk {chunk} of {self.root} is damaged: its sha256 does not match")
        tensors = load_file(str(self.root / SHARDS / f"{chunk_name(chunk)}.safetensors"))
        return tensors, json.loads(record_path.read_text())

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

            >>> from captum_gradeclip import dataset
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


def open(root: str | Path) -> ResultStore:
    """Opens a result store written by ``captum-gradeclip explain-dataset``.

    Args:
        root (str or Path): the output directory of the run.

    Returns:
        *ResultStore*: iterate it for one dict per item, or call ``load()`` for stacked tensors.

    Examples::

        >>> from captum_gradeclip import dataset
        >>> scene.image.save(tmp_path / "scene.png")
        >>> _ = (tmp_path / "pairs.csv").write_text("image,text\\nscene.png,a red square\\n")
        >>> dataset.main(["--images", str(tmp_path), "--pairs", str(tmp_path / "pairs.csv"),
        ...               "--out", str(tmp_path / "out")])  # what `captum-gradeclip explain-dataset` runs
        explained 1 items into ...
        >>> store = cg.results.open(tmp_path / "out")
        >>> store.load()["map"].shape   # one (h, w) map per good item
        torch.Size([1, 8, 8])
    """
    return ResultStore(root)
