"""A result store in a folder that someone else controls (issue 26, cases 1, 2, 3, 5, 6 and 10): symbolic links,
FIFOs and devices in place of the store's files are never followed, opened or deleted; --fresh refuses a folder that
is not one of ours and removes only our parts; parts of another mode are refused, never mixed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import captum_gradeclip as cg
from captum_gradeclip.results import LOCK, METADATA_KEY, LocalFolder, StoreError, _Bad
from tests.test_dataset import _run_dataset, dataset  # noqa: F401 - dataset is a fixture


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fails the test instead of hanging (a FIFO opened for reading would block forever)."""

    def stop(*_):
        raise TimeoutError(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("store") / "out"
    assert _run_dataset(dataset, out)[0] == 0  # 17 items in 6 parts of 3
    return out


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own file")
    return victim


def test_1_a_lock_that_is_a_symlink_a_fifo_or_someone_elses_file_is_refused_and_left_alone(dataset, tmp_path):  # noqa: F811
    victim = _victim(tmp_path)
    for kind in ("symlink", "fifo", "foreign file"):
        out = tmp_path / kind
        out.mkdir()
        if kind == "symlink":
            (out / LOCK).symlink_to(victim)
        elif kind == "fifo":
            os.mkfifo(out / LOCK)
        else:
            (out / LOCK).write_text("not a lock\n" * 3)
        with no_hang():
            code, line = _run_dataset(dataset, out)
        assert code == 2 and f"{LOCK} is" in line and "not a lock of this store; remove it" in line, line
        assert victim.read_text() == "the user's own file"
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written beside it either
    assert (tmp_path / "foreign file" / LOCK).read_text() == "not a lock\n" * 3


@pytest.mark.parametrize("kind", ["symlink to a part outside", "symlink to /dev/zero", "fifo", "directory"])
def test_2_5_6_links_fifos_devices_and_folders_in_place_of_a_part_are_named_never_read(dataset, store, tmp_path, kind):  # noqa: F811
    out = tmp_path / "out"
    shutil.copytree(store, out)
    outside = tmp_path / "outside.parquet"
    (out / "part-000002.parquet").rename(outside)  # a genuine part, moved out of the store
    planted = out / "part-000002.parquet"
    if kind == "symlink to a part outside":
        planted.symlink_to(outside)
    elif kind == "symlink to /dev/zero":
        planted.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(planted)
    else:
        planted.mkdir()
    reason = {"directory": "a directory", "fifo": "not a regular file"}.get(kind, "a symbolic link")
    with no_hang():
        with pytest.raises(StoreError, match=f"items 6-8 are in no intact part; part-000002.parquet: {reason}"):
            cg.results.open(out)
        with pytest.warns(UserWarning, match="missing 3 of 17 items"):
            partial = cg.results.open(out, partial=True)
        assert [r["item"] for r in partial] == [i for i in range(17) if not 6 <= i <= 8]
        code, line = _run_dataset(dataset, out)  # a rerun neither writes through it nor replaces it
    assert code == 2 and "holds part-000002.parquet, which is not an intact part of this store" in line
    assert "move it away" in line
    assert os.path.lexists(planted) and (planted.is_symlink() or kind in ("fifo", "directory"))
    assert outside.read_bytes()[:4] == b"PAR1" and pq.read_table(outside).num_rows == 3  # untouched


def test_2_a_temporary_name_that_is_a_link_is_neither_followed_nor_deleted(dataset, store, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    shutil.copytree(store, out)
    victim = _victim(tmp_path)
    link = out / ".part-000001.parquet.tmp-4242-0123abcd"
    link.symlink_to(victim)
    (out / "part-000001.parquet").unlink()
    code, line = _run_dataset(dataset, out)
    assert code == 0 and "did 3 items in this run" in line
    assert link.is_symlink() and victim.read_text() == "the user's own file"  # cleanup removes only our own files
    with pytest.raises(_Bad, match="a symbolic link"):  # O_NOFOLLOW: even a reader told it is a file
        LocalFolder(out).read(link.name)


def test_3_a_folder_that_is_not_a_store_is_refused_with_and_without_fresh(dataset, tmp_path):  # noqa: F811
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "own manifest"}')
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ((), ("--fresh",)):
        code, line = _run_dataset(dataset, out, *extra)
        assert code == 2 and "is not empty and holds no result store (it holds 'manifest.json', 'notes.txt')" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not a byte written or removed
    assert "--fresh removes only a store's own parts" in line


def test_10_stale_parts_from_another_mode_are_refused_and_fresh_replaces_only_them(dataset, store, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    shutil.copytree(store, out)
    (out / "part-000005.parquet").unlink()  # as if killed before the last part
    (out / "notes.txt").write_text("mine")
    code, line = _run_dataset(dataset, out, "--mode", "paper")
    assert code == 2 and "holds a run with other inputs or settings (mode changed)" in line
    code, line = _run_dataset(dataset, out, "--mode", "paper", "--fresh")
    assert code == 0 and "did 17 items in this run" in line
    modes = {
        json.loads(pq.read_schema(p).metadata[METADATA_KEY.encode()])["config"]["mode"] for p in out.glob("*.parquet")
    }
    assert modes == {"paper"} and len(list(out.glob("*.parquet"))) == 6
    assert (out / "notes.txt").read_text() == "mine"
    assert cg.results.open(out).config["mode"] == "paper"
