"""The result store: Parquet parts; for any parts removed, truncated, swapped or damaged, open() returns every item
exactly once or names what is wrong; crafted metadata is a StoreError."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import captum_gradeclip as cg
from captum_gradeclip.results import (
    FORMAT_VERSION,
    METADATA_KEY,
    StoreError,
    folder,
    part_name,
    table_of,
    write_part,
)

ITEMS, CHUNK_SIZE = 11, 3  # 4 parts, the last one short
PARTS = -(-ITEMS // CHUNK_SIZE)
CONFIG = {"model": "m", "mode": "native"}


def make_store(root: Path, config: dict | None = None, shape: tuple[int, int] = (2, 2)) -> None:
    """A store as a run writes it: item 4 is an error row, the others have a map (values item*10 + k) and a score."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "config": config or CONFIG, "items": ITEMS, "chunk_size": CHUNK_SIZE}
    for part in range(PARTS):
        rows = []
        for item in range(part * CHUNK_SIZE, min((part + 1) * CHUNK_SIZE, ITEMS)):
            row = {"item": item, "image": f"{item}.png", "text": "a red circle"}
            if item == 4:
                row["error"] = "missing image: 4.png"
            else:
                row.update(score=item / 10, map=np.arange(4, dtype=np.float32) + item * 10)
            rows.append(row)
        write_part(folder(root), part, table_of(rows, shape), {**meta, "map_shape": list(shape)})


def rewrite(path: Path, meta: dict | None = None, table=None) -> None:
    """Rewrites a part with other metadata or another table (as a hand edit would)."""
    original = pq.read_table(path)
    table = original if table is None else table
    old = json.loads(original.schema.metadata[METADATA_KEY.encode()])
    new = {**old, **(meta or {})}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(new)}), path)


def test_a_whole_store_reads_back_every_item_and_its_maps_as_one_tensor(tmp_path):
    make_store(tmp_path)
    store = cg.results.open(tmp_path)
    assert store.complete and len(store) == ITEMS and store.config == CONFIG
    rows = list(store)
    assert [r["item"] for r in rows] == list(range(ITEMS))
    assert rows[4]["error"] == "missing image: 4.png" and "map" not in rows[4]
    assert rows[5]["map"].tolist() == [[50.0, 51.0], [52.0, 53.0]]
    maps = store.maps()
    good = [i for i in range(ITEMS) if i != 4]
    assert maps.shape == (10, 2, 2) and maps[:, 0, 0].tolist() == [10.0 * i for i in good]
    loaded = store.load()
    assert loaded["item"].tolist() == good and loaded["errors"] == [(4, "missing image: 4.png")]
    assert store.summary() == {"items": 11, "errors": 1, "error_reasons": {"missing image": 1}}
    parquet = pq.ParquetFile(tmp_path / part_name(1))
    map_type = parquet.schema_arrow.field("map").type  # a fixed-size list of float32 without nulls
    assert pa.types.is_fixed_size_list(map_type) and map_type.list_size == 4 and map_type.value_type == pa.float32()
    meta = json.loads(parquet.schema_arrow.metadata[METADATA_KEY.encode()])
    assert meta == {"format": FORMAT_VERSION, "config": CONFIG, "items": ITEMS, "chunk_size": CHUNK_SIZE,
                    "part": 1, "map_shape": [2, 2]}  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written to temporary names, then renamed


def _damage(root: Path, part: int, kind: str) -> None:
    path = root / part_name(part)
    if not path.exists():
        return
    if kind == "remove":
        path.unlink()
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind.startswith("flip a byte"):  # the last byte of a column's data page: the page checksum catches it
        try:
            column = pq.ParquetFile(path).metadata.row_group(0).column(0 if kind.endswith("item") else 14)
        except pa.ArrowException:  # truncated before
            return
        data = bytearray(path.read_bytes())
        data[column.data_page_offset + column.total_compressed_size - 1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "swap with the next":
        other = root / part_name((part + 1) % PARTS)
        if other.exists() and path.exists():
            a, b = path.read_bytes(), other.read_bytes()
            path.write_bytes(b)
            other.write_bytes(a)
    elif kind == "copy of the previous":
        previous = root / part_name((part - 1) % PARTS)
        if previous.exists():
            shutil.copyfile(previous, path)


KINDS = [
    "remove",
    "truncate",
    "flip a byte of item",
    "flip a byte of map",
    "swap with the next",
    "copy of the previous",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, PARTS - 1), st.sampled_from(KINDS)), max_size=PARTS))
def test_open_returns_every_item_exactly_once_or_names_what_is_wrong(damage):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_store(root)
        for part, kind in damage:
            _damage(root, part, kind)
        readable = [_readable(root, n) for n in range(PARTS)]
        missing = [i for i in range(ITEMS) if not readable[i // CHUNK_SIZE]]  # whose part open() must refuse
        damaged = [n for n in range(PARTS) if readable[n] and not _original(root, n)]  # bytes changed in a column
        if len(missing) == ITEMS:
            for partial in (False, True):
                with pytest.raises(StoreError, match="holds no intact part of a result store"):
                    cg.results.open(root, partial=partial)
            return
        try:
            store = cg.results.open(root)
            assert not missing
        except StoreError as error:
            assert missing, error
            assert re.search(r"missing \d+ of 11 items; (items [-\d, ]+ are in no intact part|part-0)", str(error))
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                store = cg.results.open(root, partial=True)
        assert store.missing_items == missing and store.complete == (not missing)
        try:
            rows = list(store)
            assert not damaged  # a changed byte is never returned as data
        except StoreError as error:
            assert damaged and re.search(rf"part-0*{damaged[0]}\.parquet of .* is damaged", str(error)), error
            return
        assert [row["item"] for row in rows] == [i for i in range(ITEMS) if i not in missing]  # each exactly once
        for row in rows:  # and as written
            if row["item"] != 4:
                assert row["map"].flatten().tolist() == [row["item"] * 10.0 + k for k in range(4)]
        assert store.load()["item"].tolist() == [r["item"] for r in rows if r["item"] != 4]


def _readable(root: Path, part: int) -> bool:
    """The oracle of open(): the file is a Parquet file that says it is this part, and its item column (checksums
    verified) holds exactly this part's items."""
    path = root / part_name(part)
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        meta = json.loads(parquet.schema_arrow.metadata[METADATA_KEY.encode()])
        items = parquet.read(columns=["item"]).column(0).to_pylist()
    except (OSError, pa.ArrowException):
        return False
    return meta["part"] == part and items == list(range(part * CHUNK_SIZE, min((part + 1) * CHUNK_SIZE, ITEMS)))


ORIGINALS: dict[int, bytes] = {}


def _original(root: Path, part: int) -> bool:
    """Whether part ``part`` holds exactly the bytes it was written with (the oracle)."""
    if not ORIGINALS:
        with tempfile.TemporaryDirectory() as tmp:
            make_store(Path(tmp))
            ORIGINALS.update({n: (Path(tmp) / part_name(n)).read_bytes() for n in range(PARTS)})
    path = root / part_name(part)
    return path.exists() and path.read_bytes() == ORIGINALS[part]


def test_crafted_metadata_is_a_store_error_naming_the_part(tmp_path):
    cases = {
        "items": ({"items": 10**12}, r"`items` is 1000000000000, not an integer in"),
        "float": ({"items": 11.0}, r"`items` is 11.0, not an integer"),
        "negative": ({"chunk_size": -3}, r"`chunk_size` is -3"),
        "bool": ({"part": True}, r"`part` is True"),
        "renamed": ({"part": 2}, r"part-000001.parquet: holds part 2 \(a file renamed or copied\)"),
        "override": ({"score": 1.0}, r"metadata keys differ \(unexpected \['score'\]"),
        "type": ({"config": [1, 2]}, r"`config` is not a JSON object"),
        "format": ({"format": 2}, r"store format 2; this version reads format 3"),
        "shape": ({"map_shape": [4, 4]}, r"column `map` is not a list of 4 x 4 float32"),
        "counts": ({"items": 9}, r"part-000001.parquet: from another run \(items differ\)"),
    }
    for name, (meta, pattern) in cases.items():
        root = tmp_path / name
        make_store(root)
        rewrite(root / part_name(1), meta)
        with pytest.raises(StoreError, match=pattern):
            cg.results.open(root)
    deep = tmp_path / "deep"
    make_store(deep)
    table = pq.read_table(deep / part_name(1))
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: "[" * 200_000 + "]" * 200_000}),
                   deep / part_name(1))  # fmt: skip
    with pytest.raises(StoreError, match=r"part-000001.parquet: metadata is not JSON, or nested too deep"):
        cg.results.open(deep)


def test_shapes_that_disagree_with_the_data_and_rows_out_of_range_are_named(tmp_path):
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(2))
    shifted = table.set_column(0, "item", pa.array([7, 7, 8], pa.int64()))  # item 6 gone, 7 twice
    rewrite(tmp_path / part_name(2), table=shifted)
    with pytest.raises(StoreError, match=r"missing 3 of 11 items; items 6-8 are in no intact part; "
                                         r"part-000002.parquet: holds items 7 twice"):  # fmt: skip
        cg.results.open(tmp_path)
    shutil.rmtree(tmp_path)
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(0))
    wide = table.set_column(table.schema.get_field_index("map"), "map",
                            pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(27, np.float32)), 9))  # fmt: skip
    rewrite(tmp_path / part_name(0), table=wide)
    with pytest.raises(StoreError, match=r"part-000000.parquet: column `map` is not a list of 2 x 2 float32"):
        cg.results.open(tmp_path)


def test_parts_of_another_run_are_named_not_mixed(tmp_path):
    make_store(tmp_path / "native")
    make_store(tmp_path / "paper", {**CONFIG, "mode": "paper"})
    shutil.copyfile(tmp_path / "native" / part_name(3), tmp_path / "paper" / part_name(3))
    with pytest.raises(StoreError, match=r"part-000003.parquet: from another run \(mode differ\)"):
        cg.results.open(tmp_path / "paper")
    with pytest.warns(UserWarning, match="missing 2 of 11 items; items 9-10 are in no intact part"):
        partial = cg.results.open(tmp_path / "paper", partial=True)
    assert partial.config["mode"] == "paper" and [r["item"] for r in partial] == list(range(9))


def test_an_old_store_is_refused_with_how_to_convert_it(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 2, "items": 3, "chunks": 1, "chunk_size": 3}))
    with pytest.raises(StoreError) as info:
        cg.results.open(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "an earlier version" in message
    assert "python -m captum_gradeclip.runs.convert" in message


def test_differences_names_the_part_and_column(tmp_path):
    make_store(tmp_path / "a")
    make_store(tmp_path / "b")
    assert cg.results.open(tmp_path / "a").differences(cg.results.open(tmp_path / "b")) == []
    table = pq.read_table(tmp_path / "b" / part_name(2))
    rewrite(tmp_path / "b" / part_name(2), table=table.set_column(4, "score", pa.array([0, 0, 0], pa.float32())))
    assert cg.results.open(tmp_path / "a").differences(cg.results.open(tmp_path / "b")) == ["part 2: score differs"]
    with pytest.raises(TypeError, match="`other` must be a ResultStore"):
        cg.results.open(tmp_path / "a").differences(str(tmp_path / "b"))


def test_a_store_on_an_in_memory_filesystem(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    make_store(tmp_path)
    memory = fsspec.filesystem("memory")
    for path in tmp_path.iterdir():
        memory.pipe_file(f"/stores/copy/{path.name}", path.read_bytes())
    store = cg.results.open("memory://stores/copy")
    assert store.complete and store.maps().shape == (10, 2, 2)
    memory.rm(f"/stores/copy/{part_name(1)}")
    with pytest.raises(StoreError, match="items 3-5 are in no intact part"):
        cg.results.open("memory://stores/copy")


def test_differences_compare_numbers_bit_for_bit_or_within_rtol():
    import pyarrow as pa

    from captum_gradeclip.results import _same

    maps = pa.chunked_array([pa.array([[1.0, float("nan")], [2.0, 3.0]], type=pa.list_(pa.float32(), 2))])
    nudged = pa.chunked_array([pa.array([[1.0000001, float("nan")], [2.0, 3.0]], type=pa.list_(pa.float32(), 2))])
    far = pa.chunked_array([pa.array([[1.001, float("nan")], [2.0, 3.0]], type=pa.list_(pa.float32(), 2))])
    assert _same(maps, maps) and not _same(maps, nudged), "bit for bit by default, NaN equal to NaN"
    assert _same(maps, nudged, rtol=1e-5) and not _same(maps, far, rtol=1e-5)
    words = pa.chunked_array([pa.array([[0.5, 0.25], [1.0]], type=pa.list_(pa.float32()))])
    split = pa.chunked_array([pa.array([[0.5], [0.25, 1.0]], type=pa.list_(pa.float32()))])
    assert not _same(words, split, rtol=1e-5), "the same values in other lists differ"
    texts = pa.chunked_array([pa.array(["a", "b"])])
    assert _same(texts, texts, rtol=1e-5) and not _same(texts, pa.chunked_array([pa.array(["a", "c"])]), rtol=1e-5)
