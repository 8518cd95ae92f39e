"""explain-dataset: results, bad data, torchrun with 2 processes, and SIGKILL at random points then resume."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPProcessor

import captum_gradeclip as cg
from captum_gradeclip.cli import CLIError, load_model
from captum_gradeclip.cli.dataset import main
from tests.conftest import make_clip, rel_err
from tests.test_wrappers import _word_tokenizer

WORDS = ["a", "red", "circle"]
BAD = {
    "missing image": ("nowhere.png", "a red circle"),
    "corrupt image": ("corrupt.png", "a circle"),
    "truncated": ("truncated.png", "a red circle"),
    "empty text": ("img0.png", "   "),
    "overlong text": ("img1.png", " ".join(["red"] * 20)),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    model_dir = root / "model"
    make_clip(0).save_pretrained(model_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=_word_tokenizer()).save_pretrained(model_dir)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    (images / "corrupt.png").write_bytes(b"not a png at all" * 10)
    full = (images / "img2.png").read_bytes()
    (images / "truncated.png").write_bytes(full[: len(full) // 2])
    rows = [(f"img{i}.png", " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))) for i in range(12)]
    for position, (image, text) in zip((2, 5, 7, 9, 11), BAD.values(), strict=True):
        rows.insert(position, (image, text))
    pairs = root / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text"])
        writer.writerows(rows)
    return {"root": root, "model": f"hf:{model_dir}", "images": images, "pairs": pairs, "rows": rows}


def _args(dataset: dict, out: Path, *extra: str) -> list[str]:
    return ["--images", str(dataset["images"]), "--pairs", str(dataset["pairs"]), "--out", str(out),
            "--model", dataset["model"], "--chunk-size", "3", "--batch-size", "2", *extra]  # fmt: skip


def _cli(dataset: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "captum_gradeclip", "explain-dataset", *_args(dataset, out, *extra)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _clean_run(dataset: dict, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "clean"
    subprocess.run(_cli(dataset, out, *extra), check=True, env=ENV, capture_output=True)
    return out


def test_single_process_results_errors_and_reader(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    main(_args(dataset, out))
    summary_line = capsys.readouterr().out
    store = cg.results.open(out)
    assert store.complete and len(store) == len(dataset["rows"])
    rows = list(store)
    assert [r["item"] for r in rows] == list(range(len(dataset["rows"])))
    errors = {r["item"]: r["error"] for r in rows if "error" in r}
    assert len(errors) == 5
    assert {reason.split(":")[0] for reason in errors.values()} == {
        "missing image", "corrupt image", "empty text", "overlong text"}  # fmt: skip
    assert any("truncated.png" in reason for reason in errors.values())
    assert "5 errors (corrupt image 2, empty text 1, missing image 1, overlong text 1)" in summary_line

    loaded = store.load()
    good = [r for r in rows if "error" not in r]
    assert loaded["map"].shape == (12, 4, 4) and loaded["item"].tolist() == [r["item"] for r in good]
    assert loaded["errors"] == sorted(errors.items())

    # one item against a direct call, through the CLI's loader
    loaded = load_model(dataset["model"])
    row = good[4]
    pixels = loaded.pixels(Image.open(dataset["images"] / row["image"]).convert("RGB"))
    ids, mask = loaded.tokenize([row["text"]])
    sim = cg.ImageTextSimilarity(loaded.model, {"input_ids": ids, "attention_mask": mask})
    want = cg.GradECLIP(sim).attribute(pixels, target=0)[0, 0]
    assert rel_err(row["map"], want) <= 1e-5
    with torch.no_grad():
        assert abs(float(row["score"]) - float(sim(pixels)[0, 0])) <= 1e-5
    n = ids.shape[1]
    assert row["token_ids"][:n].tolist() == ids[0].tolist()
    assert (row["token_scores"][0] == 0) and (row["token_scores"][n - 1] == 0)


def test_zero_shot_labels(dataset, tmp_path):
    pairs = tmp_path / "labels.jsonl"
    labels = ["circle", "square", "circle", "triangle"]
    pairs.write_text("".join(json.dumps({"image": f"img{i}.png", "label": lab}) + "\n" for i, lab in enumerate(labels)))
    out = tmp_path / "zs"
    main(["--images", str(dataset["images"]), "--pairs", str(pairs), "--out", str(out), "--model", dataset["model"],
          "--templates", "a {}", "a red {}"])  # fmt: skip
    loaded = cg.results.open(out).load()
    classes = sorted(set(labels))
    assert loaded["label"].tolist() == [classes.index(lab) for lab in labels]
    assert loaded["map"].shape == (4, 4, 4) and (loaded["prediction"] < len(classes)).all()


def test_bad_arguments_exit_2_with_one_line(dataset, tmp_path):
    result = subprocess.run(_cli(dataset, tmp_path / "x", "--model", "nonsense:abc"), env=ENV, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captum-gradeclip: error: unknown model spec 'nonsense:abc'")
    missing = subprocess.run(
        _cli(dataset, tmp_path / "y", "--pairs", "nope.csv"), env=ENV, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "`pairs` file not found" in missing.stderr


def _same_store(a: Path, b: Path) -> None:
    reference, other = cg.results.open(a), cg.results.open(b)
    assert reference.complete and other.complete
    assert reference.differences(other) == []


def test_torchrun_two_processes_equals_single_process(dataset, tmp_path):
    clean = _clean_run(dataset, tmp_path)
    out = tmp_path / "dist"
    port = str(29500 + os.getpid() % 500)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", port,
           "-m", "captum_gradeclip", "explain-dataset", *_args(dataset, out)]  # fmt: skip
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 of 2" in result.stdout
    assert len(list(out.glob("part-*.parquet"))) == 6
    _same_store(clean, out)


def test_sigkill_at_random_points_then_resume(dataset, tmp_path):
    small_chunks = ("--chunk-size", "1", "--batch-size", "1")
    clean = _clean_run(dataset, tmp_path, *small_chunks)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    while kills < 3:
        done_before = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
        proc = subprocess.Popen(_cli(dataset, out, *small_chunks), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:  # wait for progress, then kill mid-run
            if out.exists() and len(list(out.glob("part-*.parquet"))) > done_before:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        assert proc.poll() is None, "the run finished before it could be killed; the test would prove nothing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert not cg.results.open(out, partial=True).complete
    subprocess.run(_cli(dataset, out, *small_chunks), check=True, env=ENV, capture_output=True)
    store = cg.results.open(out)
    assert store.complete
    items = [r["item"] for r in store]
    assert items == list(range(len(dataset["rows"])))  # every item exactly once
    assert not list(out.glob(".*.tmp-*"))
    _same_store(clean, out)


def test_differences_names_the_chunk_and_key_that_differ(dataset, tmp_path):
    reference, changed = tmp_path / "reference", tmp_path / "changed"
    main(_args(dataset, reference))
    rows = list(dataset["rows"])
    rows[4] = (rows[4][0], next(w for w in WORDS if w != rows[4][1]))  # item 4: chunk 1 of 3-item chunks
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        csv.writer(f).writerows([("image", "text"), *rows])
    main([*_args(dataset, changed), "--pairs", str(pairs)])
    found = cg.results.open(reference).differences(cg.results.open(changed))
    assert found and all(line.startswith("part 1: ") for line in found)
    assert "part 1: map differs" in found and "part 1: item differs" not in found
    assert cg.results.open(changed).differences(cg.results.open(changed)) == []
    partial = tmp_path / "partial"
    shutil.copytree(reference, partial)
    (partial / "part-000002.parquet").unlink()  # as if killed before part 2 was written
    with pytest.warns(UserWarning, match=r"missing 3 of 17 items; items 6-8 are in no intact part"):
        opened = cg.results.open(partial, partial=True)
    assert cg.results.open(reference).differences(opened) == ["part 2: intact in only one store"]
    with pytest.raises(TypeError, match="`other` must be a ResultStore"):
        cg.results.open(reference).differences(str(changed))


def test_a_different_command_on_the_same_store_is_refused(dataset, tmp_path):
    out = tmp_path / "store"
    main(_args(dataset, out))
    with pytest.raises(SystemExit) as info:
        main(_args(dataset, out, "--mode", "paper"))
    assert info.value.code == 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_store_is_float32_and_close_to_the_float32_store(dataset, tmp_path, dtype):
    main(_args(dataset, tmp_path / "fp32"))
    main(_args(dataset, tmp_path / "low", "--dtype", dtype))
    ref, low = cg.results.open(tmp_path / "fp32").load(), cg.results.open(tmp_path / "low").load()
    assert low["item"].tolist() == ref["item"].tolist() and low["errors"] == ref["errors"]
    bf16 = dtype == "bfloat16"
    # measured (bf16 / fp16): maps 0.024 / 0.003, scores 0.021 / 0.003, token scores (signed layer sums) 0.12 / 0.002
    for key, bound in (
        ("map", 0.1 if bf16 else 0.02),
        ("score", 0.05 if bf16 else 0.01),
        ("token_scores", 0.25 if bf16 else 0.05),
    ):
        assert low[key].dtype == torch.float32, key
        assert rel_err(low[key], ref[key]) <= bound, key
    assert cg.results.open(tmp_path / "low").config["dtype"] == dtype


def test_the_resnet_shapes_clip_explains_a_dataset(tmp_path):
    pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")
    from captum_gradeclip.zoo import shapes

    images = tmp_path / "images"
    images.mkdir()
    scenes = [shapes.make_scene(900_000 + i) for i in range(3)]
    for i, scene in enumerate(scenes):
        scene.image.save(images / f"{i}.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,text\n" + "".join(f"{i}.png,{s.caption}\n" for i, s in enumerate(scenes)))
    main(["--images", str(images), "--pairs", str(pairs), "--out", str(tmp_path / "out"), "--model", "shapes:resnet"])
    loaded = cg.results.open(tmp_path / "out").load()
    assert loaded["map"].shape == (3, 4, 4) and loaded["errors"] == []  # the ResNet's 4x4 attention-pool grid
    assert (loaded["map"] >= 0).all() and (loaded["map"].flatten(1).amax(1) > 0).all()
    # open_clip pads every text to the context length (16); the store keeps each text's own tokens (its mask)
    assert loaded["token_scores"].shape[0] == 3 and loaded["token_scores"].shape[1] < 16
    rows = list(cg.results.open(tmp_path / "out"))
    assert all(len(r["token_scores"]) == len(r["token_ids"]) and r["words"] for r in rows)


def _write_pairs(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("image", "text"), *rows])
    return path


def test_hostile_rows_become_error_rows_and_deep_images_read_in_their_range(dataset, tmp_path, capsys):
    from tests.test_images import bomb_png

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(images / "good.png")
    grey = rng.integers(0, 256, (40, 36), dtype=np.uint16)
    Image.fromarray(grey * 257).save(images / "deep.png")  # 16-bit: 8-bit value k is 16-bit k * 257
    Image.fromarray(grey.astype(np.uint8)).save(images / "eight.png")
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "secret.png")
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    bomb_png(images / "bomb.png")
    outside = ["../secret.png", "../nosuch.png", str(tmp_path / "secret.png"), "/etc/passwd", "link.png"]
    names = ["good.png", *outside, "bomb.png", "deep.png", "eight.png"]
    pairs = _write_pairs(tmp_path / "pairs.csv", [(name, "a red circle") for name in names])
    out = tmp_path / "out"
    main(["--images", str(images), "--pairs", str(pairs), "--out", str(out), "--model", dataset["model"],
          "--chunk-size", "9", "--batch-size", "2"])  # fmt: skip
    assert "6 errors (outside --images 5, too large 1)" in capsys.readouterr().out
    rows = list(cg.results.open(out))
    for i, name in enumerate(outside, start=1):
        assert rows[i]["error"] == f"outside --images: {name}"  # one reason, whether the file exists or not
    assert rows[6]["error"].startswith("too large: bomb.png")
    deep, eight = rows[7], rows[8]
    assert "error" not in deep and torch.equal(deep["map"], eight["map"]) and deep["score"] == eight["score"]


def test_a_chunk_decodes_one_batch_of_images_at_a_time(dataset, tmp_path, monkeypatch):
    import weakref

    from captum_gradeclip.runs import explainer as module

    alive, peak = set(), []

    def tracking_load(*args, **kwargs):
        image = module.load_image.__wrapped__(*args, **kwargs)
        key = id(image)
        alive.add(key)
        weakref.finalize(image, alive.discard, key)
        peak.append(len(alive))
        return image

    tracking_load.__wrapped__ = module.load_image
    monkeypatch.setattr(module, "load_image", tracking_load)
    pairs = _write_pairs(tmp_path / "pairs.csv", [(f"img{i}.png", "a red circle") for i in range(6)])
    main(["--images", str(dataset["images"]), "--pairs", str(pairs), "--out", str(tmp_path / "out"),
          "--model", dataset["model"], "--chunk-size", "6", "--batch-size", "2"])  # fmt: skip
    assert len(peak) == 6 and max(peak) == 2  # never the whole chunk of 6


def test_read_pairs_bom_header_only_and_bad_rows_name_the_file_and_line(tmp_path):
    from captum_gradeclip.cli.dataset import read_pairs

    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffimage,text\na.png,a red circle\n".encode())
    assert [(i.image, i.text) for i in read_pairs(bom)] == [("a.png", "a red circle")]
    header_only = tmp_path / "header.csv"
    header_only.write_text("image,text\n")
    with pytest.raises(ValueError, match=r"header.csv has a header but no rows"):
        read_pairs(header_only)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty.csv is empty"):
        read_pairs(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("img,caption\na.png,x\n")
    with pytest.raises(ValueError, match=r"must have an 'image' column .*got 'caption', 'img'"):
        read_pairs(tmp_path / "cols.csv")
    (tmp_path / "short.csv").write_text("image,text\na.png,x\n\nb.png\n")
    with pytest.raises(ValueError, match=r"short.csv:4: `text` must be a string; got nothing"):
        read_pairs(tmp_path / "short.csv")

    jsonl = tmp_path / "pairs.jsonl"
    good = json.dumps({"image": "a.png", "text": "a circle"})
    jsonl.write_text(f"{good}\n\n{good}\n{{broken\n")  # the bad line is line 4 (a blank line before it)
    with pytest.raises(ValueError, match=r"pairs.jsonl:4: not a JSON object"):
        read_pairs(jsonl)
    jsonl.write_text(f"{good}\n" + json.dumps({"image": "b.png", "text": 42}) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: `text` must be a string; got int"):
        read_pairs(jsonl)
    jsonl.write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: each line must be a JSON object; got list"):
        read_pairs(jsonl)
    jsonl.write_text(json.dumps({"image": 3, "label": "circle"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl:1: `image` must be a string; got int"):
        read_pairs(jsonl)


def _run_dataset(dataset: dict, out: Path, *extra: str) -> tuple[int, str]:
    """``main`` in-process: (exit code, stderr's error line or the summary line)."""
    import contextlib
    import io

    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            main(_args(dataset, out, *extra))
        except SystemExit as info:
            return int(info.code), err.getvalue().strip().splitlines()[-1]
        except CLIError as error:  # `python -m captum_gradeclip` prints it as one line, exit code 2
            return 2, str(error)
    return 0, std.getvalue().strip()


def test_a_deleted_or_damaged_part_is_named_and_a_rerun_redoes_only_it(dataset, tmp_path):
    from captum_gradeclip.results import StoreError

    out = tmp_path / "store"
    assert _run_dataset(dataset, out)[0] == 0
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    (out / "part-000002.parquet").unlink()
    data = bytearray((out / "part-000001.parquet").read_bytes())
    (out / "part-000001.parquet").write_bytes(bytes(data[: len(data) - 30]) + b"PAR1")  # a damaged footer
    with pytest.raises(StoreError) as info:
        cg.results.open(out)
    message = str(info.value)
    assert "missing 6 of 17 items; items 3-8 are in no intact part" in message
    assert "part-000001.parquet: unreadable" in message
    with pytest.warns(UserWarning, match="missing 6 of 17 items"):
        partial = cg.results.open(out, partial=True)
    assert partial.missing_items == [3, 4, 5, 6, 7, 8] and not partial.complete
    assert [r["item"] for r in partial] == [i for i in range(17) if not 3 <= i <= 8]
    assert partial.load()["item"].tolist() == [i for i in cg.results.open(reference).load()["item"].tolist()
                                               if not 3 <= i <= 8]  # fmt: skip
    # a part that is not identifiably ours is never written over: the run refuses, naming it
    code, line = _run_dataset(dataset, out)
    assert code == 2 and "holds part-000001.parquet, which is not an intact part of this store" in line
    shutil.copyfile(reference / "part-000003.parquet", out / "part-000001.parquet")  # ours, but another part
    (out / ".part-000004.parquet.tmp-999999-0123abcd").write_bytes(b"PAR1torn")  # a killed run's, removed
    code, line = _run_dataset(dataset, out)
    assert code == 0 and "did 6 items in this run" in line, line
    assert not list(out.glob(".*.tmp-*"))
    assert cg.results.open(reference).differences(cg.results.open(out)) == []


def test_a_rerun_with_other_inputs_is_refused_not_mixed(dataset, tmp_path):
    out = tmp_path / "store"
    assert _run_dataset(dataset, out)[0] == 0
    other_images = tmp_path / "fixed_images"
    shutil.copytree(dataset["images"], other_images)
    code, line = _run_dataset(dataset, out, "--images", str(other_images))
    assert code == 2 and "holds a run with other inputs or settings (images changed)" in line
    pairs = tmp_path / "pairs.csv"
    pairs.write_bytes(dataset["pairs"].read_bytes())
    code, _ = _run_dataset(dataset, out, "--pairs", str(pairs))
    assert code == 2  # another pairs file
    code, line = _run_dataset(dataset, out, "--mode", "paper", "--model", "hf:/nowhere")
    assert code == 2 and "(mode, model changed)" in line  # refused before the model is loaded
    edited = tmp_path / "edited"
    pairs = tmp_path / "edited.csv"
    pairs.write_bytes(dataset["pairs"].read_bytes())
    assert _run_dataset(dataset, edited, "--pairs", str(pairs))[0] == 0
    pairs.write_bytes(dataset["pairs"].read_bytes() + b"img0.png,a circle\n")  # the pairs file edited in place
    code, line = _run_dataset(dataset, edited, "--pairs", str(pairs))
    assert code == 2 and "(items, pairs_sha256 changed)" in line
    # --fresh discards the old store (and only its files) and starts again
    (edited / "notes.txt").write_text("mine")
    code, line = _run_dataset(dataset, edited, "--pairs", str(pairs), "--fresh")
    assert code == 0 and "explained 18 items" in line and "did 18 items in this run" in line
    store = cg.results.open(edited)
    assert [r["item"] for r in store] == list(range(18)) and store.config["pairs"] == str(pairs)
    assert (edited / "notes.txt").read_text() == "mine"


def test_a_second_run_into_a_busy_out_is_refused_in_one_line(dataset, tmp_path):
    from captum_gradeclip.results import folder

    out = tmp_path / "busy"
    out.mkdir()
    with folder(out).locked():
        code, line = _run_dataset(dataset, out)
    assert code == 2 and f"`out` {out} is in use by another run (process {os.getpid()})" in line
    assert _run_dataset(dataset, out)[0] == 0  # free again


def test_two_concurrent_runs_into_one_out(dataset, tmp_path):
    out = tmp_path / "shared"
    small = ("--chunk-size", "1", "--batch-size", "1")
    first = subprocess.Popen(_cli(dataset, out, *small), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline and not list(out.glob("part-*.parquet")):
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, holding the store: the second run starts meanwhile
    try:
        assert first.poll() is None, "the first run finished before the second started; the test would prove nothing"
        (out / f".part-000009.parquet.tmp-{first.pid}-0123abcd").write_bytes(b"PAR1 being written")
        files_before = sorted(p.name for p in out.iterdir())
        second = subprocess.run(_cli(dataset, out, *small), env=ENV, capture_output=True, text=True, timeout=300)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"is in use by another run (process {first.pid})" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == files_before  # nothing of the first touched
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert [r["item"] for r in cg.results.open(out)] == list(range(len(dataset["rows"])))


def test_cli_errors_are_one_line_and_come_before_the_model_is_loaded(dataset, tmp_path):
    no_model = ("--model", "hf:/nowhere")  # loading it would fail: these errors come first
    (tmp_path / "file").write_text("x")
    code, line = _run_dataset(dataset, tmp_path / "file", *no_model)
    assert code == 2 and line.endswith("exists and is not a directory")
    code, line = _run_dataset(dataset, tmp_path / "file" / "sub", *no_model)
    assert code == 2 and "is not writable (Not a directory)" in line
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"image": "img0.png", "label": "circle"}) + "\n")
    for template in ("a {1}", "a photo", "{} and {}", "a {name}"):
        code, line = _run_dataset(dataset, tmp_path / "t", "--pairs", str(labels), "--templates", template, *no_model)
        assert code == 2 and f"`--templates` {template!r} must hold exactly one {{}}" in line, line
    code, line = _run_dataset(dataset, tmp_path / "t", "--templates", "a {}", *no_model)
    assert code == 2 and "`--templates` applies to image,label rows" in line
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text(json.dumps({"image": "img0.png", "text": "a"}) + "\n" + json.dumps({"image": "x", "text": 7}))
    result = subprocess.run(_cli(dataset, tmp_path / "n", "--pairs", str(numbers)), env=ENV, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip() == (
        f"captum-gradeclip explain-dataset: error: {numbers}:2: `text` must be a string; got int"
    )
    with pytest.raises(CLIError, match=r"^captum-gradeclip explain-dataset: unrecognized arguments: --bogus"):
        main(_args(dataset, tmp_path / "n", "--bogus"))


def test_a_rerun_after_image_files_changed_in_place_is_refused(dataset, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(dataset["images"], images)
    out = tmp_path / "store"
    assert _run_dataset(dataset, out, "--images", str(images))[0] == 0
    assert _run_dataset(dataset, out, "--images", str(images))[0] == 0  # nothing changed: resumes (0 items to do)
    Image.new("RGB", (40, 36), "red").save(images / "img0.png")  # fixed in place
    Image.new("RGB", (40, 36), "blue").save(images / "nowhere.png")  # a missing image now exists
    code, line = _run_dataset(dataset, out, "--images", str(images))
    assert code == 2 and "2 image file(s) changed, appeared or vanished since they were explained" in line
    code, line = _run_dataset(dataset, out, "--images", str(images), "--fresh")
    assert code == 0 and "did 17 items in this run" in line
    assert "missing image" not in {r.get("error", "").split(":")[0] for r in cg.results.open(out)}


def test_method_game_store_equals_game_computed_directly_and_the_store_records_it(dataset, tmp_path, capsys):
    out = tmp_path / "game"
    main(_args(dataset, out, "--method", "game"))
    assert "warning" not in capsys.readouterr().err
    store = cg.results.open(out)
    assert store.config["method"] == "GAME"
    good = [r for r in store if "error" not in r]
    loaded = load_model(dataset["model"])
    for row in good[:3]:
        pixels = loaded.pixels(Image.open(dataset["images"] / row["image"]).convert("RGB"))
        ids, mask = loaded.tokenize([row["text"]])
        sim = cg.ImageTextSimilarity(loaded.model, {"input_ids": ids, "attention_mask": mask})
        assert rel_err(row["map"], cg.baselines.GAME(sim).attribute(pixels, target=0)[0, 0]) <= 1e-5
        tsim = cg.TextImageSimilarity(loaded.model, images=pixels)
        want = cg.baselines.GAME(tsim).attribute(ids, target=0, additional_forward_args=(mask,))[0]
        assert rel_err(row["token_scores"][: ids.shape[1]], want) <= 1e-5
    # a store of another method is refused; the default run records its method too
    with pytest.raises(SystemExit) as info:
        main(_args(dataset, out))
    assert info.value.code == 2
    main(_args(dataset, tmp_path / "default", "--method", "Grad-ECLIP"))
    assert cg.results.open(tmp_path / "default").config["method"] == "Grad-ECLIP (native)"


def test_method_image_only_skips_token_scores_with_a_warning(dataset, tmp_path, capsys):
    out = tmp_path / "maskclip"
    main(_args(dataset, out, "--method", "MaskCLIP"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["captum-gradeclip explain-dataset: warning: no word importances: MaskCLIP explains image only"]
    loaded = cg.results.open(out).load()
    assert "token_scores" not in loaded and loaded["map"].shape == (12, 4, 4) and "token_ids" in loaded


def test_method_errors_are_one_line(dataset, tmp_path):
    for extra, message in [
        (["--method", "lime"], "captum-gradeclip explain-dataset: --method: no method is called 'lime'; the methods"),
        (["--method", "rise", "--mode", "paper"], "captum-gradeclip explain-dataset: --mode paper is Grad-ECLIP's; "
         "RISE has no modes"),
    ]:  # fmt: skip
        with pytest.raises(CLIError, match=f"^{message}"):
            main(_args(dataset, tmp_path / "x", *extra))
    assert not (tmp_path / "x").exists()
