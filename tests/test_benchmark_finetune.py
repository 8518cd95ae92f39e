"""benchmarks/finetune.py runs end to end on `--model-dir` (a tiny untrained shapes CLIP saved here) and reports."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from tools import train_shapes as ts

FINETUNE = Path(__file__).parents[1] / "benchmarks" / "finetune.py"
KEYS = {"region_acc_mask", "region_acc_box", "recall_at_5", "recall_at_1", "zero_shot_top1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = ts.TrainConfig(width=32, vision_layers=2, text_layers=1, heads=2, projection_dim=16)
    path = tmp_path_factory.mktemp("finetune") / "model"
    ts.save(ts.build_model(config).eval(), ts.build_processor(), path)
    return path


def small(model_dir: Path) -> list[str]:
    return ["--model-dir", str(model_dir), "--steps", "2", "--batch-size", "4", "--eval-scenes", "12",
            "--eval-pairs", "100", "--eval-singles", "12"]  # fmt: skip


def test_finetune_benchmark_reports_mean_and_spread_over_seeds(model_dir, tmp_path, capsys):
    main = runpy.run_path(str(FINETUNE))["main"]
    page = tmp_path / "page.md"
    argv = [*small(model_dir), "--seeds", "0", "1", "--json", str(tmp_path / "r.json"), "--write", str(page)]
    report = main(argv)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert set(report["before"]) == KEYS and [r["seed"] for r in report["runs"]] == [0, 1]
    assert all(set(r["after"]) == KEYS and not r["changes"] for r in report["runs"])
    assert all(0.0 <= v <= 1.0 for r in report["runs"] for v in r["after"].values())
    assert report["runs"][0]["after"] != report["runs"][1]["after"], "each seed trains on its own stream"
    for key in KEYS:
        changes = [100 * (r["after"][key] - report["before"][key]) for r in report["runs"]]
        change = report["change"][key]
        assert change["mean"] == pytest.approx(sum(changes) / 2, abs=0.01)
        assert change["std"] == pytest.approx(abs(changes[0] - changes[1]) / 2**0.5, abs=0.01)  # ddof 1
        assert change["min"] <= change["mean"] <= change["max"]
    held = report["held"]
    assert held["region_acc_mask"] == (report["change"]["region_acc_mask"]["mean"] >= 10)
    assert held["recall_at_1"] == (report["change"]["recall_at_1"]["mean"] >= -1)
    assert report["target_met"] == all(held.values())
    assert "target met" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("# Region-phrase fine-tuning") and "--json" not in text
    assert "<!-- finetune: seeds -->" in text and "anchor_weight=10.0, distill_weight=3.0, hard_negatives=True" in text
    mean_r1 = report["change"]["recall_at_1"]["mean"]
    assert f"{mean_r1:+.1f} +- {report['change']['recall_at_1']['std']:.1f}" in text
    assert ("**met**" if report["target_met"] else "**not met**") in text

    variants = main([*small(model_dir), "--seeds", "0", "--variants", "--write", str(page)])
    assert "change" not in variants and len(variants["runs"]) == 6
    plain = {"anchor_weight": 0.0, "distill_weight": 0.0, "hard_negatives": False}
    assert variants["runs"][0]["changes"] == plain
    assert variants["runs"][3]["changes"] == {**plain, "batch_size": 12, "steps": 1}
    assert variants["runs"][4]["changes"] == {"anchor_weight": 30.0}
    text = page.read_text()
    assert "<!-- finetune: seeds -->" in text and "<!-- finetune: variants -->" in text, "both sections kept"
    assert f"| {variants['runs'][0]['label']} |" in text


def test_training_stream_object_counts_and_negatives():
    batches = runpy.run_path(str(FINETUNE))["batches"]
    pixels, captions, negatives = next(batches(0, 8))
    assert pixels.shape == (8, 3, 64, 64) and len(captions) == len(negatives) == 8
    assert all(caption.count(" a ") + 1 in (2, 3) for caption in captions), "2 or 3 objects by default"
    assert all(n != c for n, c in zip(negatives, captions, strict=True)), "a negative differs from its caption"
    _, singles, _ = next(batches(0, 8, (1.0, 0.0, 0.0)))
    assert all(caption.count(" a ") == 0 for caption in singles)
    again = next(batches(0, 8))
    assert again[1] == captions and torch.equal(again[0], pixels), "seeded"
