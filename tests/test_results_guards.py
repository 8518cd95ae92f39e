"""The store's comparison and part checks at their edges (the mutation run's survivors): ``differences`` sees
every column but the image files' size and time, error rows included, and parts present in one store only."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import captum_gradeclip as cg
from captum_gradeclip.results import part_name
from tests.test_results import make_store, rewrite


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
