"""`captum-gradeclip explain`, run as a subprocess: scores, one figure, a report, warnings; every error is one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captum_gradeclip.viz import PANEL_WIDTH, panel_grid
from captum_gradeclip.zoo import shapes


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "captum_gradeclip", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every CLI run of this file, started together so that they overlap."""
    root = tmp_path_factory.mktemp("explain")
    scene = shapes.make_scene(4_100_000, n_objects=2)
    scene.image.save(root / "scene.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "notes.txt").write_text("not an image")
    texts = [*scene.prompts, scene.absent_prompts[0]]
    commands = {
        "ok": ["explain", "scene.png", *texts, "--out", "out"],
        "paper": ["explain", "scene.png", texts[0], "--mode", "paper", "--out", "out_paper"],
        "bf16": ["explain", "scene.png", *texts, "--dtype", "bfloat16", "--out", "out_bf16"],
        "unknown": ["explain", "scene.png", "a red dragon", "a red circle", "--out", "out_unknown"],
        "tie": ["explain", "scene.png", "a woman", "a uniform", "a flag", "--out", "out_tie"],
        "softmax_one": ["explain", "scene.png", "a red circle", "--score", "softmax", "--out", "out_softmax"],
        "missing": ["explain", "missing.png", "a red circle"],
        "ansi": ["explain", "miss\x1b[31ming.png", "a red circle"],
        "out_file": ["explain", "scene.png", "a red circle", "--out", "notes.txt"],
        "long": ["explain", "scene.png", "a red circle", " ".join(["a blue square"] * 12), "--out", "out_long"],
        "corrupt": ["explain", "corrupt.png", "a red circle"],
        "text_file": ["explain", "notes.txt", "a red circle"],
        "spec": ["explain", "scene.png", "a red circle", "--model", "nonsense:x"],
        "no_texts": ["explain", "scene.png"],
        "empty_text": ["explain", "scene.png", "  "],
        "hub": ["explain", "scene.png", "a red circle", "--model", "hf:openai/clip-vit-base-patch32"],
        "mode": ["explain", "scene.png", "a red circle", "--mode", "fast"],
    }
    procs = {name: _start(args, root) for name, args in commands.items()}
    # 17 overlapping runs: on a busy 2-core machine the last ones finish after about 5 minutes
    results = {name: (*proc.communicate(timeout=900), proc.returncode) for name, proc in procs.items()}
    return root, scene, texts, results


def _printed(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:1] in "* "]


def test_explain_prints_scores_and_writes_one_figure_and_a_report(runs):
    root, scene, texts, results = runs
    out, err, code = results["ok"]
    assert code == 0, err
    lines = _printed(out)
    assert len(lines) == 3 and all(repr(t) in line for t, line in zip(texts, lines, strict=True))
    scores = [float(line.lstrip("* ").split()[0]) for line in lines]
    best = [i for i, line in enumerate(lines) if line.startswith("*")]
    assert best == [scores.index(max(scores))]
    assert max(scores[:2]) > scores[2], "a present object's prompt beats the absent one"
    assert all("words:" in line for line in lines) and f"{scene.objects[0].colour}=" in lines[0]
    assert sorted(p.name for p in (root / "out").iterdir()) == ["explanation.png", "index.html"]
    with Image.open(root / "out" / "explanation.png") as figure:
        rows, columns = panel_grid(len(texts) + 1)  # the image and 3 texts: a 2 x 2 grid
        assert figure.format == "PNG" and figure.size[0] == round(columns * PANEL_WIDTH * 100), "the grid's columns"
        assert figure.size[1] > rows * PANEL_WIDTH * 100 * 0.8, "and its rows"
    page = (root / "out" / "index.html").read_text()
    assert page.count("<img") == 1 and page.count("(best)") == 1 and 'class="note"' not in page
    assert "warning" not in err


def test_explain_paper_mode_runs(runs):
    root, _, _, results = runs
    _, err, code = results["paper"]
    assert code == 0, err
    assert (root / "out_paper" / "explanation.png").is_file()


def test_explain_notes_texts_longer_than_the_context(runs):
    out, err, code = runs[3]["long"]
    assert code == 0, err
    assert "note: TEXT 2 has 38 tokens; the model reads the first 32 (the rest is cut" in out
    assert "TEXT 1 " not in out


def test_explain_warns_about_words_the_model_does_not_know(runs):
    root, _, _, results = runs
    out, err, code = results["unknown"]
    assert code == 0, err
    assert "captum-gradeclip: warning: ShapesCLIP does not know the words 'dragon'" in err
    assert "knows only the shapes world" in err and "hf:" in err
    assert "dragon=" in _printed(out)[0], "the unknown word is shown as typed"
    banner = re.search(r'<div class="note" role="alert">(.*?)</div>', (root / "out_unknown" / "index.html").read_text())
    assert banner and "&#x27;dragon&#x27;" in banner[1]


def test_explain_stars_no_text_when_the_scores_tie(runs):
    root, _, _, results = runs
    out, err, code = results["tie"]
    assert code == 0, err
    lines = _printed(out)
    assert len(lines) == 3 and not any(line.startswith("*") for line in lines)
    assert len({line.split()[0] for line in lines}) == 1, "every word is unknown: the scores are equal"
    assert "'woman', 'uniform', 'flag'" in err and "no text is marked best: the highest scores tie" in err
    assert "(best)" not in (root / "out_tie" / "index.html").read_text()


def test_explain_refuses_softmax_over_one_text_in_one_line(runs):
    out, err, code = runs[3]["softmax_one"]
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert "--score softmax with one TEXT is always 1" in err and "use --score cosine" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "missing image: missing.png"),
        ("corrupt", "corrupt image: corrupt.png"),
        ("text_file", "corrupt image: notes.txt"),
        ("ansi", "missing image: miss\\x1b[31ming.png"),  # the escape is written out, not sent to the terminal
        ("out_file", "`--out` notes.txt exists and is not a directory"),
        ("spec", "unknown model spec 'nonsense:x'; the specs are shapes | shapes:resnet | shapes:deep | hf:"),
        ("no_texts", "the following arguments are required: TEXT"),
        ("empty_text", "every TEXT must be non-empty"),
        (
            "hub",
            "the Hugging Face hub is unreachable and 'openai/clip-vit-base-patch32' is not cached; use --model shapes",
        ),
        ("mode", "argument --mode: invalid choice: 'fast'"),
    ],
)
def test_explain_errors_are_one_line_with_exit_code_2(runs, name, message):
    _, err, code = runs[3][name]
    assert code == 2
    assert message in err and "Traceback" not in err and "\x1b" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("captum-gradeclip: error: ")


def test_explain_in_bfloat16_ranks_the_texts_as_float32_does(runs):
    root, _, texts, results = runs
    (out, err, code), (ref, _, _) = results["bf16"], results["ok"]
    assert code == 0, err

    def scores(printed: str) -> list[float]:
        lines = [line for line in printed.splitlines() if line[:1] in "* "]
        return [float(line.lstrip("* ").split()[0]) for line in lines]

    low, full = scores(out), scores(ref)
    assert len(low) == len(texts) and max(abs(a - b) for a, b in zip(low, full, strict=True)) < 0.02
    assert low.index(max(low)) == full.index(max(full))
    assert (root / "out_bf16" / "explanation.png").read_bytes()[:4] == b"\x89PNG"
