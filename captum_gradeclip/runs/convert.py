"""Converting a result store of the earlier format (``manifest.json``, ``shards/chunk-*.json`` records and
safetensors shards) into the Parquet store of this version.

    python -m captum_gradeclip.runs.convert OLD_FOLDER NEW_FOLDER

Only complete chunks whose record carries its own sha256 and names its shard's sha256 are converted; the files are
read without following a symbolic link, and only regular files under the size limit are read.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors

from captum_gradeclip.images import printable
from captum_gradeclip.results import FORMAT_VERSION, LocalFolder, ResultStore, StoreError, _Bad, table_of, write_part


def convert(old: str | Path, new: str | Path) -> ResultStore:
    """Writes the store ``old`` (format 2) as a Parquet store in the empty or new folder ``new``, and opens it.

    Args:
        old (str or Path): the folder of a store written by an earlier version.
        new (str or Path): where to write the Parquet store.

    Returns:
        *ResultStore*: the new store (``partial`` if the old one had missing or damaged chunks: a warning).

    Raises:
        StoreError: ``old`` is not a store of format 2, or ``new`` is not empty.
    """
    source, shards = LocalFolder(old), LocalFolder(Path(old) / "shards")
    if shards.root.is_symlink() or not shards.root.is_dir():
        raise StoreError(f"{source.label} has no shards folder: not a store of the earlier format")
    try:
        manifest = json.loads(bytes(source.read("manifest.json", 1 << 24)))
        items, size, config = int(manifest["items"]), int(manifest["chunk_size"]), dict(manifest["config"])
        if manifest.get("format") != 2 or not 0 < items <= 10**9 or not 0 < size <= items * 2:
            raise ValueError
    except (_Bad, ValueError, KeyError, TypeError, RecursionError):
        raise StoreError(f"{source.label}/manifest.json is not a manifest of the earlier format") from None
    target = LocalFolder(new)
    target.make()
    if target.entries():
        raise StoreError(f"{target.label} is not empty: give a new folder for the converted store")
    config = {**config, "converted_from_format": 2}
    meta = {"format": FORMAT_VERSION, "config": config, "items": items, "chunk_size": size}
    for chunk in range(-(-items // size)):
        try:
            record, tensors = _chunk(shards, chunk)
        except (_Bad, ValueError, KeyError, TypeError, RecursionError):
            continue  # missing or damaged: the new store names its items
        rows = {i: {"item": i, **_given(record, i)} for i in range(chunk * size, min((chunk + 1) * size, items))}
        for i, reason in record["errors"]:
            rows[int(i)]["error"] = str(reason)
        shape = tuple(tensors["map"].shape[1:]) if "map" in tensors else None
        for k, i in enumerate(tensors["item"].tolist()):
            row = rows[i]
            row["map"] = tensors["map"][k].reshape(-1).astype(np.float32)
            for key, name in (("score", "score"), ("label", "label_index"), ("prediction", "prediction")):
                if key in tensors:
                    row[name] = tensors[key][k].item()
            for key in ("token_ids", "token_scores"):
                if key in tensors:
                    row[key] = tensors[key][k].tolist()
        write_part(target, chunk, table_of([rows[i] for i in sorted(rows)], shape), {**meta, "map_shape": shape})
    return ResultStore(target, partial=True)


def _given(record: dict, item: int) -> dict:
    given = record.get("meta", {}).get(str(item), {})
    return {k: given[k] for k in ("image", "text", "label") if isinstance(given.get(k), str)}


def _chunk(shards: LocalFolder, chunk: int) -> tuple[dict, dict]:
    name = f"chunk-{chunk:06d}"
    record = json.loads(bytes(shards.read(f"{name}.json", 1 << 26)))
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    if record.get("record_sha256") != hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest():
        raise ValueError("record edited")
    data = bytes(shards.read(f"{name}.safetensors"))
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise ValueError("shard damaged")
    return record, load_safetensors(data)


def main(argv: list[str] | None = None) -> None:
    """``python -m captum_gradeclip.runs.convert OLD NEW``: one line on success, one line and exit 2 on error."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m captum_gradeclip.runs.convert OLD_FOLDER NEW_FOLDER", file=sys.stderr)
        raise SystemExit(2)
    try:
        store = convert(*args)
    except (StoreError, OSError) as error:
        print(f"convert: error: {printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"converted {len(store)} of {store.meta['items']} items into {printable(args[1])}")


if __name__ == "__main__":
    main()
