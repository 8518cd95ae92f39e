"""cg.explain_dataset (captum_gradeclip.runs): the library run, its inputs, its store read by other readers, other
filesystems, non-finite results, Ctrl-C, and the conversion of old stores. Numbered cases are those of issue 26."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import captum_gradeclip as cg
from captum_gradeclip.cli import load_model
from captum_gradeclip.results import StoreError
from captum_gradeclip.runs import InputError, read_pairs
from tests.test_dataset import ENV, _cli, _run_dataset, dataset  # noqa: F401 - dataset is a fixture

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def loaded(dataset):  # noqa: F811
    return load_model(dataset["model"])


def _pairs(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_the_library_run_equals_the_command_line_run(dataset, loaded, tmp_path):  # noqa: F811
    store = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=tmp_path / "lib",
                               chunk_size=3, batch_size=2, progress=False)  # fmt: skip
    assert store.complete and store.run["items_done_here"] == 17 and store.run["parts_done_here"] == 6
    assert _run_dataset(dataset, tmp_path / "cli")[0] == 0
    assert store.differences(cg.results.open(tmp_path / "cli")) == []
    again = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=tmp_path / "lib",
                               chunk_size=3, batch_size=2, progress=False)  # fmt: skip
    assert again.run["items_done_here"] == 0  # resumed: nothing left to do
    with pytest.raises(InputError, match=r"`images` .* is not a directory"):
        cg.explain_dataset(loaded, dataset["pairs"], images=tmp_path / "none", out=tmp_path / "x")
    with pytest.raises(StoreError, match=r"holds a run with other inputs or settings \(mode changed\)"):
        cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=tmp_path / "lib", chunk_size=3,
                           batch_size=2, mode="paper", progress=False)  # fmt: skip


def test_library_modules_do_not_import_the_command_line():
    code = ("import sys, captum_gradeclip.runs, captum_gradeclip.results, captum_gradeclip.images; "
            "print(sorted(m for m in sys.modules if m.startswith('captum_gradeclip.cli')))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    for path in (ROOT / "captum_gradeclip").rglob("*.py"):
        if "cli" not in path.relative_to(ROOT / "captum_gradeclip").parts and path.name != "__main__.py":
            source = path.read_text()
            assert "from captum_gradeclip.cli" not in source.replace(">>> from captum_gradeclip.cli", ""), path


# -------------------------------------------------------------------------- 7, 8, 9: the pairs file as written


def test_7_8_quoted_newlines_and_line_separators_stay_inside_their_text(dataset, loaded, tmp_path):  # noqa: F811
    texts = ["a red\nsquare", "a\u2028red circle", "a red\x85circle", "a\x0cred circle", "a red circle"]
    pairs = _pairs(tmp_path / "pairs.csv", ["image", "text"], [[f"img{i}.png", t] for i, t in enumerate(texts)])
    assert [i.text for i in read_pairs(pairs)] == texts  # five rows: no text split its row, none lost a character
    store = cg.explain_dataset(loaded, pairs, images=dataset["images"], out=tmp_path / "out", progress=False)
    rows = list(store)
    assert [r["text"] for r in rows] == texts and not [r for r in rows if "error" in r]
    assert rows[0]["words"] == ["a", "red", "square"]  # "a red\nsquare" is three words, not "a redsquare"
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"image": "img0.png", "text": t}, ensure_ascii=False) + "\n" for t in texts))
    assert [i.text for i in read_pairs(jsonl)] == texts


def test_9_a_file_with_text_and_label_columns_needs_an_explicit_choice(dataset, tmp_path):  # noqa: F811
    pairs = _pairs(tmp_path / "both.csv", ["image", "text", "label"],
                   [["img0.png", "a red square", "circle"], ["img1.png", "a circle", "square"]])  # fmt: skip
    with pytest.raises(InputError, match=r"has both a 'text' and a 'label' column: choose .* --column text"):
        read_pairs(pairs)
    code, line = _run_dataset(dataset, tmp_path / "o", "--pairs", str(pairs), "--model", "hf:/nowhere")
    assert code == 2 and "--column label (zero-shot over the labels, with --templates)" in line  # before loading
    assert _run_dataset(dataset, tmp_path / "t", "--pairs", str(pairs), "--column", "text")[0] == 0
    assert [r["text"] for r in cg.results.open(tmp_path / "t")] == ["a red square", "a circle"]
    assert (
        _run_dataset(dataset, tmp_path / "z", "--pairs", str(pairs), "--column", "label", "--templates", "a {}")[0] == 0
    )
    zero_shot = cg.results.open(tmp_path / "z")
    assert zero_shot.load()["label"].tolist() == [0, 1] and zero_shot.config["column"] == "label"
    (tmp_path / "twice.csv").write_text("image,text,text\na.png,x,y\n")
    with pytest.raises(InputError, match=r"names column\(s\) 'text' more than once"):
        read_pairs(tmp_path / "twice.csv")


def test_hostile_rows_are_error_rows_naming_their_row_and_reason_and_the_run_goes_on(dataset, loaded, tmp_path):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((36, 40, 3), 90, np.uint8)).save(images / "good.png")
    (images / "loop.png").symlink_to(images / "loop.png")  # a symbolic-link loop
    jsonl = tmp_path / "pairs.jsonl"
    rows = [
        {"image": "good.png", "text": "a red circle"},
        {"image": "loop.png", "text": "a red circle"},
        {"image": "x" * 300 + ".png", "text": "a red circle"},
        {"image": "a\u0000b.png", "text": "a red circle"},
        {"image": "good.png", "text": "a red \ud800 circle"},
        {"image": "\ud800.png", "text": "a red circle"},
        {"image": "good.png", "text": "a red circle"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))  # JSON escapes: NUL and lone surrogates survive
    store = cg.explain_dataset(loaded, jsonl, images=images, out=tmp_path / "out", progress=False)
    got = [r.get("error") for r in store]
    assert got[0] is None and got[6] is None
    assert got[1].startswith("bad path: loop.png") or got[1].startswith("outside --images: loop.png")
    assert got[2].startswith("bad path: " + "x" * 300) and got[2].endswith("(name too long)")
    assert got[3] == "bad path: a\\x00b.png (a NUL byte)"
    assert got[4] == "bad text: not encodable (a lone surrogate)"
    assert got[5].startswith("bad path:") and "lone surrogate" in got[5]
    assert store.summary()["errors"] == 5
    again = cg.explain_dataset(loaded, jsonl, images=images, out=tmp_path / "out", progress=False)
    assert again.run["items_done_here"] == 0  # and a rerun is not stopped by them either


def test_tokenizer_refusals_are_error_rows(dataset, loaded, tmp_path):  # noqa: F811
    import dataclasses

    def refusing(text: str) -> int:
        if "circle" in text:
            raise RuntimeError("the tokenizer cannot encode this text\nsecond line")
        return loaded.count_tokens(text)

    strict = dataclasses.replace(loaded, count_tokens=refusing)
    pairs = _pairs(tmp_path / "p.csv", ["image", "text"], [["img0.png", "a red circle"], ["img1.png", "a red"]])
    store = cg.explain_dataset(strict, pairs, images=dataset["images"], out=tmp_path / "out", progress=False)
    errors = [r.get("error") for r in store]
    assert errors == ["bad text: the tokenizer refuses it (the tokenizer cannot encode this text)", None]


# --------------------------------------------------------------------------------------------- 4: the thin PNG

THIN = """
import resource, sys
import captum_gradeclip as cg
from captum_gradeclip.cli import load_model
loaded = load_model("shapes")
store = cg.explain_dataset(loaded, sys.argv[1], images=sys.argv[2], out=sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, [r.get("error") for r in store])
"""


def test_4_an_image_whose_processed_size_exceeds_the_budget_is_refused_before_the_processor(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64000, 1), "red").save(images / "thin.png")  # a few hundred bytes, 64000 pixels
    Image.new("RGB", (64, 64), "red").save(images / "square.png")
    assert (images / "thin.png").stat().st_size < 1000
    peaks = {}
    for name in ("thin", "square"):
        pairs = _pairs(tmp_path / f"{name}.csv", ["image", "text"], [[f"{name}.png", "a red square"]])
        result = subprocess.run([sys.executable, "-c", THIN, str(pairs), str(images), str(tmp_path / name)],
                                env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        peak, errors = result.stdout.strip().split(" ", 1)
        peaks[name] = int(peak)
        if name == "thin":
            assert errors.startswith("['too large: thin.png (64000x1 pixels, resized to a shorter side of 64: ")
    assert peaks["thin"] <= peaks["square"] + 150  # MiB: without the check the processor takes about +2 GB


# ------------------------------------------------------------------------------- 13: non-finite maps and scores


def test_13_nan_weights_give_error_rows_counted_in_the_summary(dataset, tmp_path, capsys):  # noqa: F811
    poisoned = load_model(dataset["model"])
    with torch.no_grad():
        poisoned.model.visual_projection.weight[0, 0] = float("nan")
    store = cg.explain_dataset(poisoned, dataset["pairs"], images=dataset["images"], out=tmp_path / "nan",
                               progress=False)  # fmt: skip
    summary = store.summary()
    assert summary["error_reasons"]["non-finite result"] == 12 and summary["errors"] == 17
    assert store.maps().shape[0] == 0 and not [r for r in store if "map" in r or "score" in r]


# ----------------------------------------------------------------------------- other readers, other filesystems


def test_pandas_pyarrow_duckdb_and_datasets_read_the_store(dataset, loaded, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    store = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=out, chunk_size=5,
                               progress=False)  # fmt: skip
    maps = store.maps()
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(out)
    assert sorted(frame["item"]) == list(range(17)) and frame["error"].notna().sum() == 5
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table()
    assert table.num_rows == 17
    duckdb = pytest.importorskip("duckdb")
    count, errors = duckdb.sql(f"SELECT count(*), count(error) FROM '{out}/*.parquet'").fetchall()[0]
    assert (count, errors) == (17, 5)
    datasets = pytest.importorskip("datasets")
    loaded_ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train",
                                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    good = sorted((r for r in loaded_ds if r["error"] is None), key=lambda r: r["item"])
    assert torch.equal(torch.tensor([r["map"] for r in good]).view(-1, 4, 4), maps)
    # a process that never imports captum_gradeclip reads it with pandas and pyarrow
    code = (
        "import sys, numpy as np, pandas as pd, pyarrow.parquet as pq\n"
        f"frame = pd.read_parquet({str(out)!r}).sort_values('item')\n"
        "good = frame[frame.error.isna()]\n"
        "maps = np.stack(good['map'].to_numpy())\n"
        f"meta = pq.read_schema({str(out / 'part-000000.parquet')!r}).metadata[b'captum_gradeclip']\n"
        "assert 'captum_gradeclip' not in sys.modules\n"
        "print(len(frame), maps.shape, float(maps.sum()), b'pairs_sha256' in meta)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True)
    assert result.stdout.split()[:3] == ["17", "(12,", "16)"] and result.stdout.split()[-1] == "True"
    assert abs(float(result.stdout.split()[3]) - float(maps.sum())) < 1e-3


def test_a_run_writes_to_and_reads_from_an_in_memory_filesystem(dataset, loaded, tmp_path):  # noqa: F811
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://runs/{tmp_path.name}"
    store = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=url, chunk_size=5,
                               progress=False)  # fmt: skip
    assert store.complete and len(store) == 17
    memory = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in memory.ls(f"/runs/{tmp_path.name}", detail=False))
    assert names == [f"part-{i:06d}.parquet" for i in range(4)]
    local = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=tmp_path / "local",
                               chunk_size=5, progress=False)  # fmt: skip
    assert cg.results.open(url).differences(local) == []
    memory.rm(f"/runs/{tmp_path.name}/part-000001.parquet")
    again = cg.explain_dataset(loaded, dataset["pairs"], images=dataset["images"], out=url, chunk_size=5,
                               progress=False)  # fmt: skip
    assert again.run["items_done_here"] == 5 and again.complete


# -------------------------------------------------------------------------------------- Ctrl-C, then resume


def _default_sigint() -> None:
    """A child started from a background job inherits SIGINT ignored; Ctrl-C is what a terminal user sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_prints_one_line_exits_130_and_the_store_resumes_exactly(dataset, tmp_path):  # noqa: F811
    rows = list(csv.reader(dataset["pairs"].open(newline="")))
    pairs = _pairs(tmp_path / "long.csv", rows[0], rows[1:] * 8)  # 136 items: long enough to interrupt
    small = ("--chunk-size", "1", "--batch-size", "1", "--pairs", str(pairs))
    clean = tmp_path / "clean"
    subprocess.run(_cli(dataset, clean, *small), check=True, env=ENV, capture_output=True)
    out = tmp_path / "out"
    env = ENV
    proc = subprocess.Popen(_cli(dataset, out, *small), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be interrupted; the test would prove nothing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.strip().splitlines() if "item/s]" not in line]  # but tqdm's progress bar
    assert len(lines) == 1 and lines[0].startswith("captum-gradeclip explain-dataset: interrupted;"), err[-2000:]
    assert not cg.results.open(out, partial=True).complete
    assert not list(out.glob(".*.tmp-*"))  # the part being written was removed, not left torn
    subprocess.run(_cli(dataset, out, *small), check=True, env=env, capture_output=True)
    assert cg.results.open(clean).differences(cg.results.open(out)) == []


# ------------------------------------------------------------------------------------------ old stores


def test_an_old_store_is_refused_in_one_line_and_converts(dataset, tmp_path):  # noqa: F811
    import hashlib

    from safetensors.torch import save_file

    from captum_gradeclip.runs.convert import main as convert_main

    old = tmp_path / "old"
    (old / "shards").mkdir(parents=True)
    manifest = {"format": 2, "config": {"model": "m", "mode": "native"}, "items": 3, "chunks": 1, "chunk_size": 3}
    (old / "manifest.json").write_text(json.dumps(manifest))
    shard = old / "shards" / "chunk-000000.safetensors"
    tensors = {"item": torch.tensor([0, 2]), "map": torch.arange(8.0).view(2, 2, 2),
               "score": torch.tensor([0.5, 0.25]), "token_ids": torch.tensor([[1, 2], [3, 4]])}  # fmt: skip
    save_file(tensors, str(shard))
    given = {str(i): {"image": f"{'abc'[i]}.png", "text": "a red circle", "label": None} for i in range(3)}
    record = {"items": [0, 1, 2], "errors": [[1, "missing image: b.png"]], "chunk": 0, "meta": given,
              "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()}  # fmt: skip
    record["record_sha256"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    (old / "shards" / "chunk-000000.json").write_text(json.dumps(record))
    with pytest.raises(StoreError, match=r"convert it with `python -m captum_gradeclip.runs.convert"):
        cg.results.open(old)
    code, line = _run_dataset(dataset, old, "--model", "hf:/nowhere")
    assert code == 2 and "an earlier version" in line  # a run into it is refused too, touching nothing
    convert_main([str(old), str(tmp_path / "new")])
    store = cg.results.open(tmp_path / "new")
    rows = list(store)
    assert [r.get("error") for r in rows] == [None, "missing image: b.png", None]
    assert rows[2]["map"].tolist() == [[4.0, 5.0], [6.0, 7.0]] and rows[2]["score"] == 0.25
    assert rows[0]["image"] == "a.png" and store.config["converted_from_format"] == 2
    assert sorted(p.name for p in old.rglob("*")) == ["chunk-000000.json", "chunk-000000.safetensors",
                                                      "manifest.json", "shards"]  # fmt: skip
    env = {**ENV, "PYTHONPATH": str(ROOT)}
    again = subprocess.run([sys.executable, "-m", "captum_gradeclip.runs.convert", str(old), str(tmp_path / "new")],
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and again.stderr.strip().endswith("is not empty: give a new folder for the "
                                                                   "converted store")  # fmt: skip


def test_cli_error_types_are_one_line(dataset, tmp_path):  # noqa: F811
    os.mkfifo(tmp_path / "fifo.csv")
    code, line = _run_dataset(dataset, tmp_path / "o", "--pairs", str(tmp_path / "fifo.csv"), "--model", "x:y")
    assert code == 2 and "`pairs` file not found" in line  # a FIFO is not a file: never opened


# -------------------------------------------------------------------------- resume: images identified by size and time


def test_a_resume_refuses_an_image_replaced_by_another_file_of_the_same_size(loaded, tmp_path):
    """A resume identifies each stored row's image file by its size and modification time (``image_bytes``,
    ``image_mtime_ns``): another picture of exactly the same size (an uncompressed BMP) written in its place is a
    change, so old and new results are not mixed."""
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("a.bmp", "red"), ("b.bmp", "green")):
        Image.new("RGB", (36, 40), colour).save(images / name)
    pairs = _pairs(tmp_path / "pairs.csv", ["image", "text"], [["a.bmp", "a red circle"], ["b.bmp", "a circle"]])
    options = {"images": images, "out": tmp_path / "store", "chunk_size": 1, "batch_size": 2, "progress": False}
    first = cg.explain_dataset(loaded, pairs, **options)
    assert first.complete and cg.explain_dataset(loaded, pairs, **options).run["items_done_here"] == 0
    before = (images / "a.bmp").stat()
    Image.new("RGB", (36, 40), "blue").save(images / "a.bmp")  # another picture, the same number of bytes
    os.utime(images / "a.bmp", ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # written a second later
    assert (images / "a.bmp").stat().st_size == before.st_size
    with pytest.raises(StoreError, match=r"1 image file\(s\) changed, appeared or vanished .*\(e\.g\. a\.bmp\)"):
        cg.explain_dataset(loaded, pairs, **options)
    assert cg.results.open(tmp_path / "store").differences(first) == [], "the store is left as it was"
    redone = cg.explain_dataset(loaded, pairs, **options, fresh=True)
    assert redone.run["items_done_here"] == 2
    changed = redone.differences(first)  # the new picture's item only
    assert "part 0: map differs" in changed and all(line.startswith("part 0: ") for line in changed)
