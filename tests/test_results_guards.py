"""The store's comparison and part checks at their edges (the mutation run's survivors): ``differences`` sees
every column but the image files' size and time, error rows included, and parts present in one store only."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import captum_gradeclip as cg
from captum_gradeclip.results import METADATA_KEY, StoreError, part_name
from tests.test_results import ITEMS, make_store, rewrite


def stores(tmp_path):
    make_store(tmp_path / "a")
    make_store(tmp_path / "b")
    return tmp_path / "a", tmp_path / "b"


def set_column(path, name, values, kind):
    table = pq.read_table(path)
    rewrite(path, table=table.set_column(table.schema.get_field_index(name), name, pa.array(values, kind)))


def differences(a, b, **options):
    return cg.results.open(a).differences(cg.results.open(b), **options)


def test_stores_that_differ_only_in_an_error_row_differ(tmp_path):
    a, b = stores(tmp_path)
    # item 4 (part 1, its second row) is the error row: only its reason changes
    set_column(b / part_name(1), "error", [None, "corrupt image: 4.png (ValueError)", None], pa.string())
    assert differences(a, b) == ["part 1: error differs"]
    assert differences(a, b, rtol=0.5) == ["part 1: error differs"]  # no tolerance on text
    assert differences(b, a) == ["part 1: error differs"]


def test_the_image_files_size_and_time_are_not_results(tmp_path):
    a, b = stores(tmp_path)
    set_column(b / part_name(0), "image_bytes", [1, 2, 3], pa.int64())
    set_column(b / part_name(0), "image_mtime_ns", [1, 2, 3], pa.int64())
    assert differences(a, b) == []


def test_every_differing_column_and_part_is_named_in_order(tmp_path):
    a, b = stores(tmp_path)
    set_column(b / part_name(3), "text", ["x", "y"], pa.string())
    set_column(b / part_name(0), "score", [0.0, 0.0, 0.0], pa.float32())
    set_column(b / part_name(0), "text", ["x", "y", "z"], pa.string())
    assert differences(a, b) == ["part 0: text differs", "part 0: score differs", "part 3: text differs"]


def test_a_part_in_one_store_only_is_named(tmp_path):
    a, b = stores(tmp_path)
    (b / part_name(2)).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the partial store names its missing items
        partial = cg.results.open(b, partial=True)
        assert cg.results.open(a).differences(partial) == ["part 2: intact in only one store"]
        assert partial.differences(cg.results.open(a)) == ["part 2: intact in only one store"]


def test_only_a_result_store_is_compared():
    with pytest.raises(TypeError, match=r"^`other` must be a ResultStore \(from cg.results.open\); got str$"):
        cg.results.ResultStore.differences(object.__new__(cg.results.ResultStore), "out")


def test_a_missing_part_does_not_stop_the_comparison_of_the_later_ones(tmp_path):
    a, b = stores(tmp_path)
    set_column(b / part_name(3), "text", ["x", "y"], pa.string())
    (b / part_name(1)).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = cg.results.open(b, partial=True)
    assert cg.results.open(a).differences(partial) == ["part 1: intact in only one store", "part 3: text differs"]


def test_rtol_is_passed_on_to_every_float_column(tmp_path):
    a, b = stores(tmp_path)
    set_column(b / part_name(0), "score", [0.0, 0.1 * (1 + 1e-4), 0.2], pa.float32())  # item 1's score, nudged
    assert differences(a, b) == ["part 0: score differs"]  # bit for bit by default
    assert differences(a, b, rtol=1e-3) == []
    assert differences(a, b, rtol=1e-6) == ["part 0: score differs"]


# -- read_part: each way a part can be wrong gets its own message, in full ----------------------------------------


def refused(root, message):
    """open() refuses the store, naming part 1 and ``message`` exactly."""
    with pytest.raises(StoreError) as caught:
        cg.results.open(root)
    assert f"; {part_name(1)}: {message}; open it with partial=True" in str(caught.value), str(caught.value)


def test_a_part_without_one_of_the_columns_names_it(tmp_path):
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(1))
    rewrite(tmp_path / part_name(1), table=table.drop_columns(["text"]))
    refused(tmp_path, "column `text` is missing or not of type string")


def test_a_map_column_of_another_width_names_the_metadatas_shape_rows_by_columns(tmp_path):
    make_store(tmp_path, shape=(2, 3))  # not square: the message must say 2 x 3, not 3 x 3
    table = pq.read_table(tmp_path / part_name(1))
    maps = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(12, np.float32)), 4)
    rewrite(tmp_path / part_name(1), table=table.set_column(table.schema.get_field_index("map"), "map", maps))
    refused(tmp_path, "column `map` is not a list of 2 x 3 float32 (its metadata's shape)")


def test_columns_are_found_by_name_in_any_order(tmp_path):
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(1))
    names = ["map", *[n for n in table.column_names if n != "map"]]  # the map first: index 0
    rewrite(tmp_path / part_name(1), table=table.select(names))
    store = cg.results.open(tmp_path)
    assert store.complete and [row["item"] for row in store] == list(range(ITEMS))
    assert store.maps()[3].flatten().tolist() == [30.0, 31.0, 32.0, 33.0]  # item 3, part 1's first


def test_an_unreadable_part_is_named_with_the_first_line_of_the_readers_error(tmp_path):
    make_store(tmp_path)
    path = tmp_path / part_name(1)
    path.write_bytes(path.read_bytes()[:-40])  # the footer cut
    with pytest.raises((pa.ArrowException, OSError)) as reader:
        pq.ParquetFile(path)
    first_line = str(reader.value).splitlines()[0]
    assert first_line
    refused(tmp_path, f"unreadable ({first_line})")


@pytest.mark.parametrize(
    ("error", "shown"),
    [(OSError(), "OSError"), (pa.ArrowInvalid("bad footer\nthe rest of the story"), "bad footer")],
    ids=["no message: its type", "several lines: the first"],
)
def test_a_readers_error_is_shown_by_its_first_line_or_its_type(tmp_path, monkeypatch, error, shown):
    make_store(tmp_path)
    original = pq.ParquetFile
    monkeypatch.setattr(
        pq, "ParquetFile", lambda source, **options: _raise_for_part_1(source, options, original, error)
    )
    refused(tmp_path, f"unreadable ({shown})")


def _raise_for_part_1(source, options, original, error):
    opened = original(source, **options)
    meta = json.loads(opened.schema_arrow.metadata[METADATA_KEY.encode()])
    if meta["part"] == 1:
        raise error
    return opened


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([0, 4, 5], "holds items 0 outside its range"),  # below the part's first item (3), inside range(0, 6)
        ([3, 9, 10], "holds items 9-10 outside its range"),
        ([4, 3, 5], "holds its items out of order or some missing"),
        ([3, 3, 5], "holds items 3 twice"),
    ],
)
def test_items_outside_the_parts_range_twice_or_out_of_order_are_named(tmp_path, items, message):
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(1))
    rewrite(tmp_path / part_name(1), table=table.set_column(0, "item", pa.array(items, pa.int64())))
    refused(tmp_path, message)


def test_a_part_with_rows_missing_names_both_counts(tmp_path):
    make_store(tmp_path)
    table = pq.read_table(tmp_path / part_name(1))
    rewrite(tmp_path / part_name(1), table=table.slice(0, 2))  # items 3 and 4: item 5 dropped
    refused(tmp_path, "holds 2 rows; its range has 3")
