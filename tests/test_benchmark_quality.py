"""benchmarks/quality.py runs unchanged on `--model hf:PATH --data DIR`: a tiny random CLIP and a folder made here."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPImageProcessor, CLIPProcessor, PreTrainedTokenizerFast

import captum_gradeclip as cg
from captum_gradeclip import metrics
from tests.conftest import make_clip

QUALITY = Path(__file__).parents[1] / "benchmarks" / "quality.py"
WORDS = ["a", "red", "blue", "square", "circle", "dog"]


def _save_model(root: Path) -> Path:
    vocab = {"<s>": 0, "<pad>": 1, "<unk>": 2, "</s>": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 3)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    path = root / "model"
    make_clip(7).save_pretrained(path)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path


def _save_data(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,text,box"]
    for i, (text, size) in enumerate([("a red square", (40, 40)), ("a blue circle", (48, 64)), ("a dog", (32, 32))]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(data / f"img{i}.png")
        rows.append(f"img{i}.png,{text},4 4 {size[1] // 2} {size[0] // 2}")
    (data / "pairs.csv").write_text("\n".join(rows) + "\n")
    return data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    model, data, out = _save_model(root), _save_data(root), root / "quality.md"
    module = runpy.run_path(str(QUALITY))
    argv = ["--model", f"hf:{model}", "--data", str(data), "--steps", "4", "--rise-masks", "4", "--m2ib-steps", "1",
            "--out", str(out)]  # fmt: skip
    module["main"](argv)
    return module, model, data, out


def _rows(text):
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[1:]}


def test_every_method_gets_a_row_of_finite_metrics(run):
    _, _, _, out = run
    header, rows = _rows(out.read_text())
    assert header[:7] == ["method", "deletion AUC ↓", "insertion AUC ↑", "pointing game ↑", "energy PG ↑",
                          "text deletion AUC ↓", "text insertion AUC ↑"]  # fmt: skip
    assert set(rows) == {
        "Grad-ECLIP (native)", "Grad-ECLIP (paper)", "Raw attention", "Rollout", "GAME", "Grad-CAM", "MaskCLIP",
        "CLIP Surgery", "RISE", "M2IB", "captum:Saliency", "captum:InputXGradient", "captum:LayerGradCam",
        "captum:IntegratedGradients", "captum:Occlusion", "captum:FeatureAblation", "Random map (control)",
        "Centre Gaussian (control)",
    }  # fmt: skip
    for method, cells in rows.items():
        values = cells[1:9]
        image_only = method not in TEXT_METHODS
        assert (values[4] == "n/a") == image_only and (values[7] == "n/a") == image_only, method
        for v in values:
            if v != "n/a":
                assert math.isfinite(float(v.strip("*").rstrip("x"))), (method, v)  # cosine AUCs may be negative
        assert 0 <= float(values[2].strip("*")) <= 1 and 0 <= float(values[3].strip("*")) <= 1
        if "(control)" not in method:
            assert float(values[6].rstrip("x").strip("*")) > 0  # time over a forward pass
    assert out.read_text().startswith("# Explanation quality benchmark")


#: The rows with text columns.
TEXT_METHODS = {
    "Grad-ECLIP (native)", "Grad-ECLIP (paper)", "Raw attention", "Rollout", "GAME", "Grad-CAM", "M2IB",
    "captum:IntegratedGradients", "Random map (control)",
}  # fmt: skip


def test_captum_s_settings_and_every_text_side_n_a_reason_are_on_the_page(run):
    module, _, _, out = run
    text = out.read_text()
    assert module["CAPTUM_SETTINGS"] in text and "IntegratedGradients with 32 steps" in module["CAPTUM_SETTINGS"]
    section = text.split("### Score: cosine")[1]
    reasons = [line for line in section.splitlines() if "(text side): " in line]
    assert "- MaskCLIP (text side): it explains images only" in reasons
    assert (
        "- captum:Occlusion (text side): it attributes to pixels, and token ids have none; captum:IntegratedGradie"
        "nts explains texts (LayerIntegratedGradients over the token embeddings)" in section
    )
    named = {line[2:].split(" (text side)")[0] for line in section.splitlines() if "(text side): " in line}
    _, rows = _rows(text)
    assert named == set(rows) - TEXT_METHODS - {"Centre Gaussian (control)"}


def test_a_captum_cell_equals_the_metric_of_captum_s_pooled_map(run):
    module, model_path, data, out = run
    task = module["hf_task"](str(model_path), data, None)
    sim = cg.ImageTextSimilarity(task.model, task.prompts, tokenizer=task.processor.tokenizer)
    pixels = task.pixels.clone().requires_grad_()
    grads = Saliency(sim).attribute(pixels, target=task.image_target.tolist()).detach()  # Captum directly
    by_hand = grads.abs().sum(1).reshape(3, 4, 8, 4, 8).sum((2, 4))[:, None]  # pooled by hand: 8x8 patches
    maps = cg.baselines.CaptumSaliency(sim).attribute(task.pixels, target=task.image_target.tolist())
    # equal up to the order of the sums; the metric itself is taken on the method's maps, because a ranking metric
    # can move by 1e-3 when two patches' scores swap at the last bit
    torch.testing.assert_close(maps, by_hand)
    expected = metrics.image_insertion(sim, task.pixels, maps, task.image_target, steps=4, baseline="blur").auc.mean()
    _, rows = _rows(out.read_text())
    assert float(rows["captum:Saliency"][2].strip("*")) == pytest.approx(float(expected), abs=5e-4)


def test_a_cell_equals_the_metric_computed_directly(run):
    module, model_path, data, out = run
    task = module["hf_task"](str(model_path), data, None)
    assert task.prompts == ["a blue circle", "a dog", "a red square"] and task.image_target.tolist() == [2, 0, 1]
    assert task.regions.shape == (3, 32, 32) and task.regions[1, 4:15, 2:15].all() and not task.regions[1, 20:].any()
    sim = cg.ImageTextSimilarity(task.model, task.prompts, tokenizer=task.processor.tokenizer)
    maps = cg.GradECLIP(sim).attribute(task.pixels, target=task.image_target.tolist())
    expected = metrics.image_insertion(sim, task.pixels, maps, task.image_target, steps=4, baseline="blur").auc.mean()
    _, rows = _rows(out.read_text())
    assert float(rows["Grad-ECLIP (native)"][2].strip("*")) == pytest.approx(float(expected), abs=5e-4)


def test_bad_arguments_exit_with_a_message(run, tmp_path, capsys):
    module = run[0]
    with pytest.raises(SystemExit):
        module["main"](["--model", "hf:x"])
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["main"](["--model", "hf:x", "--data", str(tmp_path)])
    assert "exactly one CSV" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["main"](["--model", "resnet"])
    assert "shapes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["main"](["--model", "hf:x", "--data", str(tmp_path), "--methods", "gradeclip", "gmae"])
    err = capsys.readouterr().err
    assert "`--methods`: no method is called 'gmae'; the methods are 'Grad-ECLIP (native)', " in err
    assert "'GAME'" in err and "'Rollout'" in err


def test_method_names_match_by_their_start_up_to_case_and_punctuation(run):
    module = run[0]
    args = module["argparse"].Namespace(rise_masks=1, m2ib_steps=1, metric_batch_size=1, seed=0)
    select = module["select_methods"]
    assert select(["gradeclip", "game"], args) == {"Grad-ECLIP (native)", "Grad-ECLIP (paper)", "GAME"}
    assert select(["Grad-ECLIP (paper)", "clip surgery"], args) == {"Grad-ECLIP (paper)", "CLIP Surgery"}
    assert select(None, args) is None


def test_rows_without_a_box_warn(run, tmp_path):
    module, model, data, _ = run
    partial = tmp_path / "partial"
    partial.mkdir()
    for image in data.glob("*.png"):
        (partial / image.name).write_bytes(image.read_bytes())
    rows = (data / "pairs.csv").read_text().splitlines()
    rows[2] = ",".join(rows[2].split(",")[:2]) + ","  # the second image has no box
    (partial / "pairs.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"pairs.csv: 1 of 3 rows have no box, so the pointing games are left out"):
        task = module["hf_task"](str(model), partial, None)
    assert task.regions is None


def test_table_marks_the_best_and_what_does_not_beat_random(run):
    module = run[0]
    results = {
        "Grad-ECLIP (native)": {"deletion": 0.2, "insertion": 0.5, "time_image": 1.5},
        "GAME": {"deletion": 0.1, "insertion": 0.3, "time_image": 3.0},
        "Random map (control)": {"deletion": 0.3, "insertion": 0.4, "time_image": 0.01},
    }
    _, rows = _rows(module["table"](results))
    assert rows["Grad-ECLIP (native)"][1:] == ["0.200", "**0.500**", "1.50x", "none"]
    assert rows["GAME"][1:] == ["**0.100**", "0.300", "3.00x", "insertion AUC"]
    assert rows["Random map (control)"][-1] == "-"
    notes = module["findings"](results)
    assert notes[0].startswith("- deletion AUC ↓: Grad-ECLIP is **not** first: GAME 0.100 vs Grad-ECLIP (native) 0.200")
    assert notes[1] == "- insertion AUC ↑: Grad-ECLIP is first (Grad-ECLIP (native), 0.500)."


def test_cache_resumes_without_recomputing(run, tmp_path, monkeypatch):
    module, model, data, _ = run
    cache, out = tmp_path / "cache.json", tmp_path / "q.md"
    argv = ["--model", f"hf:{model}", "--data", str(data), "--steps", "2", "--methods", "Grad-ECLIP (native)",
            "--score", "cosine", "softmax", "--out", str(out), "--cache", str(cache)]  # fmt: skip
    module["main"](argv)
    first = out.read_text()
    saved = json.loads(cache.read_text())
    assert set(saved["results"]) == {"cosine", "softmax"}
    assert set(saved["results"]["softmax"]) == {"Grad-ECLIP (native)", "Random map (control)"}

    def explain_again(*args, **kwargs):
        raise AssertionError("a cached method was explained again")

    monkeypatch.setitem(module["run"].__globals__, "_explain", explain_again)
    module["main"](argv)
    assert out.read_text() == first and "## Score: softmax" in first
    assert "--cache" not in first and str(tmp_path) not in first.split("Reproduce with:")[1].split("--out")[0]


def test_the_model_loads_with_the_command_line_s_loader(tmp_path, capsys):
    main = runpy.run_path(str(QUALITY))["main"]
    missing = tmp_path / "no-model"
    (tmp_path / "pairs.csv").write_text("image,text\nx.png,a red square\n")
    with pytest.raises(SystemExit):
        main(["--model", f"hf:{missing}", "--data", str(tmp_path), "--out", str(tmp_path / "q.md")])
    error = capsys.readouterr().err
    assert f"hf:{missing}: no such directory {missing} (expected a save_pretrained directory)" in error


def test_cache_keeps_rows_across_method_subsets_and_the_layer_study(run, tmp_path, monkeypatch):
    module, model, data, _ = run
    cache, out = tmp_path / "cache.json", tmp_path / "q.md"
    base = ["--model", f"hf:{model}", "--data", str(data), "--steps", "2", "--score", "cosine", "--out", str(out),
            "--cache", str(cache)]  # fmt: skip
    module["main"]([*base, "--methods", "Grad-ECLIP (native)"])
    module["main"]([*base, "--methods", "GAME", "--layer-study", "2"])
    saved = json.loads(cache.read_text())["results"]
    assert set(saved["cosine"]) == {"Grad-ECLIP (native)", "GAME", "Random map (control)"}
    study = saved["layer study: cosine"]
    assert set(study) == {"layers=1", "layers=2"}
    # layers=1 is Grad-ECLIP's default on images: the same maps, hence the same metrics as the table's row
    for key in ("deletion", "insertion", "pointing", "energy"):
        assert study["layers=1"][key] == saved["cosine"]["Grad-ECLIP (native)"][key], key
    assert study["layers=2"]["deletion"] != study["layers=1"]["deletion"]
    page = out.read_text()
    assert "#### Layer study, score cosine" in page and "| layers=2 |" in page and "| GAME |" in page

    def explain_again(*args, **kwargs):
        raise AssertionError("a cached row was explained again")

    monkeypatch.setitem(module["run"].__globals__, "_explain", explain_again)
    elsewhere = tmp_path / "other.md"  # another page: --out is no part of the cached setup, nor is --score's order
    again = [a if a != str(out) else str(elsewhere) for a in base]
    module["main"]([*again, "--methods", "GAME", "Grad-ECLIP (native)", "--layer-study", "2"])
    assert elsewhere.read_text().split("Reproduce with:")[1].count("| layers=") == 2
    with pytest.raises(AssertionError, match="a cached row was explained again"):  # a new score is computed
        module["main"]([*again, "--score", "softmax", "cosine", "--methods", "GAME"])
