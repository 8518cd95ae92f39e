"""The result store: for any chunk files removed or damaged, open() returns every item or says which are missing."""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import captum_gradeclip as cg
from captum_gradeclip.results import (
    FORMAT_VERSION,
    MANIFEST,
    SHARDS,
    StoreError,
    atomic_write_json,
    chunk_items,
    write_chunk,
)

ITEMS, CHUNK_SIZE = 11, 3  # 4 chunks, the last one short
CHUNKS = -(-ITEMS // CHUNK_SIZE)


def make_store(root: Path) -> None:
    """A store as explain-dataset writes it: item 4 is an error row, the others have a map and a score."""
    manifest = {"format": FORMAT_VERSION, "config": {}, "items": ITEMS, "chunks": CHUNKS, "chunk_size": CHUNK_SIZE}
    (root / SHARDS).mkdir(parents=True)
    atomic_write_json(root / MANIFEST, manifest)
    for chunk in range(CHUNKS):
        items = chunk_items(manifest, chunk)
        good = [i for i in items if i != 4]
        tensors = {"item": torch.tensor(good), "map": torch.arange(len(good) * 4.0).view(-1, 2, 2) + chunk}
        record = {"items": items, "errors": [[4, "missing image: x.png"]] if 4 in items else [], "meta": {}}
        write_chunk(root, chunk, tensors, record)
    atomic_write_json(root / MANIFEST, {**manifest, "complete": True})


def _damage(root: Path, chunk: int, kind: str, originals: dict[int, str] | None = None) -> None:
    record = root / SHARDS / f"chunk-{chunk:06d}.json"
    shard = root / SHARDS / f"chunk-{chunk:06d}.safetensors"
    if kind == "delete record":
        record.unlink()
    elif kind == "delete shard":
        shard.unlink()
    elif kind == "flip a shard byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif kind == "truncate shard":
        shard.write_bytes(shard.read_bytes()[:20])
    elif kind == "edit record":
        body = json.loads(record.read_text())
        body["errors"].append([body["items"][0], "an edited error row"])
        record.write_text(json.dumps(body))
    elif kind == "garble record":
        record.write_text("{not json")
    elif kind == "swap records":  # a record copied from another chunk
        record.write_text(originals[(chunk + 1) % CHUNKS])  # type: ignore[index]


KINDS = ["delete record", "delete shard", "flip a shard byte", "truncate shard", "edit record", "garble record",
         "swap records"]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, CHUNKS - 1), st.sampled_from(KINDS), max_size=CHUNKS))
def test_open_returns_every_item_or_names_the_missing_ones(damage):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_store(root)
        originals = {c: (root / SHARDS / f"chunk-{c:06d}.json").read_text() for c in range(CHUNKS)}
        for chunk, kind in damage.items():
            _damage(root, chunk, kind, originals)
        manifest = {"items": ITEMS, "chunk_size": CHUNK_SIZE}
        missing = sorted(i for chunk in damage for i in chunk_items(manifest, chunk))
        if not damage:
            store = cg.results.open(root)
            assert [row["item"] for row in store] == list(range(ITEMS)) and store.complete
            assert [i for i, _ in store.load()["errors"]] == [4]
            return
        with pytest.raises(StoreError) as info:
            cg.results.open(root)
        message = str(info.value)
        assert f"missing {len(missing)} of {ITEMS} items" in message
        named = []  # the items of every "chunk(s) a[-b] (item(s) x[-y]): ..." the message lists
        for low, high in re.findall(r"chunks? \d+(?:-\d+)? \(items? (\d+)(?:-(\d+))?\)", message):
            named += range(int(low), int(high or low) + 1)
        assert named == missing
        with pytest.warns(UserWarning, match=f"missing {len(missing)} of {ITEMS} items"):
            partial = cg.results.open(root, partial=True)
        assert partial.missing_items == missing and not partial.complete
        rows = [row["item"] for row in partial]
        assert rows == [i for i in range(ITEMS) if i not in missing]  # every other item, exactly once
        assert partial.load()["item"].tolist() == [i for i in rows if i != 4]


def test_a_chunk_damaged_after_open_raises_while_reading(tmp_path):
    make_store(tmp_path)
    store = cg.results.open(tmp_path)
    _damage(tmp_path, 2, "flip a shard byte")
    with pytest.raises(StoreError, match=r"chunk 2 of .* changed since it was opened: shard damaged"):
        list(store)


def test_a_damaged_or_old_manifest_is_refused(tmp_path):
    make_store(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "items": 20}))
    with pytest.raises(StoreError, match="20 items do not make 4 chunks"):
        cg.results.open(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(StoreError, match="store format 1"):
        cg.results.open(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(StoreError, match="not a result store manifest"):
        cg.results.open(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))
        assert len(cg.results.open(tmp_path)) == ITEMS  # whole again: no warning
