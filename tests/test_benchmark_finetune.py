"""benchmarks/finetune.py runs end to end on `--model-dir` (a tiny untrained shapes CLIP saved here) and reports."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import torch

from captum_gradeclip.zoo import train_shapes as ts

FINETUNE = Path(__file__).parents[1] / "benchmarks" / "finetune.py"


def test_finetune_benchmark_reports_before_and_after(tmp_path, capsys):
    torch.manual_seed(0)
    config = ts.TrainConfig(width=32, vision_layers=2, text_layers=1, heads=2, projection_dim=16)
    ts.save(ts.build_model(config).eval(), ts.build_processor(), tmp_path / "model")
    main = runpy.run_path(str(FINETUNE))["main"]
    argv = ["--model-dir", str(tmp_path / "model"), "--steps", "2", "--batch-size", "4"]
    report = main([*argv, "--eval-scenes", "12", "--eval-pairs", "100", "--json", str(tmp_path / "r.json"),
                   "--write", str(tmp_path / "page.md")])  # fmt: skip
    assert json.loads((tmp_path / "r.json").read_text()) == report
    keys = {"region_acc_mask", "region_acc_box", "recall_at_5", "recall_at_1", "zero_shot_top1"}
    assert set(report["before"]) == set(report["after"]) == keys
    assert all(0.0 <= v <= 1.0 for part in ("before", "after") for v in report[part].values())
    gain = 100 * (report["after"]["region_acc_mask"] - report["before"]["region_acc_mask"])
    assert abs(report["region_gain_points"] - round(gain, 2)) < 1e-9
    assert report["before"] != report["after"], "the copy was trained"
    out = capsys.readouterr().out
    assert "region_acc_mask" in out and "target met" in out
    page = (tmp_path / "page.md").read_text()
    assert page.startswith("# Region-phrase fine-tuning") and f"{100 * report['after']['recall_at_5']:.1f}" in page
    assert ("**met**" if report["target_met"] else "**not met**") in page
