"""Resuming a dataset run checks every stored image file (the mutation run's survivors): one replaced by
another file of the same size, touched, removed or newly there is refused, counted once per file and named
in item order; an unchanged folder resumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import captum_gradeclip as cg
from captum_gradeclip.cli import load_model
from captum_gradeclip.results import StoreError
from captum_gradeclip.zoo import shapes


@pytest.fixture(scope="module")
def loaded():
    return load_model("shapes")


@pytest.fixture
def run(loaded, tmp_path):
    """A stored run of 5 items in parts of 2: a.png twice, b.png, c.png, and d.png missing (an error row)."""
    images = tmp_path / "images"
    images.mkdir()
    for name, seed in [("a.png", 0), ("b.png", 1), ("c.png", 2), ("spare.png", 3)]:
        shapes.make_scene(seed).image.save(images / name)
    rows = ["a.png,a red circle", "b.png,a blue square", "a.png,a green cross", "c.png,a red square", "d.png,x"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,text\n" + "\n".join(rows) + "\n")

    def again():
        return cg.explain_dataset(loaded, pairs, images=images, out=tmp_path / "out", chunk_size=2, progress=False)

    first = again()
    assert first.complete and first.run["items_done_here"] == 5
    return images, again


def refused(count: int, example: str) -> str:
    return (
        rf"^`out` .*: {count} image file\(s\) changed, appeared or vanished since they were explained "
        rf"\(e\.g\. {example}\); old and new results are not mixed: use --fresh to start again, or a new --out$"
    )


def test_an_unchanged_folder_resumes_with_nothing_to_do(run):
    _, again = run
    assert again().run["items_done_here"] == 0


def test_a_file_replaced_by_another_of_the_same_size_is_refused(run):
    images, again = run
    before = images.joinpath("b.png").stat()
    data = bytearray(images.joinpath("b.png").read_bytes())
    data[-20] ^= 0xFF  # other bytes, same length
    images.joinpath("b.png").write_bytes(bytes(data))
    os.utime(images / "b.png", ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert images.joinpath("b.png").stat().st_size == before.st_size
    with pytest.raises(StoreError, match=refused(1, r"b\.png")):
        again()


def test_a_file_only_touched_is_refused_once_however_many_items_use_it(run):
    images, again = run
    info = images.joinpath("a.png").stat()
    os.utime(images / "a.png", ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))  # items 0 and 2
    with pytest.raises(StoreError, match=refused(1, r"a\.png")):
        again()


def test_files_removed_or_appeared_are_counted_and_the_first_in_item_order_is_named(run):
    images, again = run
    Path(images / "c.png").unlink()  # item 3
    shapes.make_scene(4).image.save(images / "d.png")  # item 4: missing when explained
    with pytest.raises(StoreError, match=refused(2, r"c\.png")):
        again()
    Path(images / "b.png").rename(images / "b2.png")  # item 1 vanished too: now it comes first
    with pytest.raises(StoreError, match=refused(3, r"b\.png")):
        again()


def test_fresh_starts_again_over_changed_files(run, loaded, tmp_path):
    images, _ = run
    Path(images / "c.png").unlink()
    store = cg.explain_dataset(
        loaded, tmp_path / "pairs.csv", images=images, out=tmp_path / "out", chunk_size=2, fresh=True, progress=False
    )
    assert store.complete and store.run["items_done_here"] == 5
    assert [row.get("error") is not None for row in store] == [False, False, False, True, True]
