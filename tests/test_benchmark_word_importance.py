"""benchmarks/word_importance.py runs on `--model-dir` (a tiny untrained shapes CLIP saved here), writes its files."""

from __future__ import annotations

import csv
import runpy
from pathlib import Path

import torch

from captum_gradeclip.zoo import shapes
from tools import train_shapes as ts

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "word_importance.py"


def test_word_importance_benchmark_writes_tables_plot_and_summary(tmp_path, capsys):
    torch.manual_seed(0)
    config = ts.TrainConfig(width=32, vision_layers=2, text_layers=1, heads=2, projection_dim=16)
    ts.save(ts.build_model(config).eval(), ts.build_processor(), tmp_path / "model")
    script = runpy.run_path(str(SCRIPT))
    argv = ["--model-dir", str(tmp_path / "model"), "--scenes", "12", "--out", str(tmp_path / "o")]
    report = script["main"]([*argv, "--write", str(tmp_path / "page.md")])
    for name in ("words.csv", "absent.csv", "words.png", "summary.json"):
        assert (tmp_path / "o" / name).stat().st_size > 0
    with (tmp_path / "o" / "absent.csv").open() as handle:
        tags = {row["key"] for row in csv.DictReader(handle) if row["level"] == "tag"}
    assert {"present", "absent", "determiner", "separator"} <= tags
    assert {"colour", "shape", "determiner"} <= set(report["mean_share_by_tag"])
    assert "present object words" in capsys.readouterr().out
    page = (tmp_path / "page.md").read_text()
    colour = report["mean_share_by_tag"]["colour"]
    assert page.startswith("# Word importance") and f"| colour | {colour:.3f} |" in page


def test_presence_tags_mark_the_replaced_object():
    presence_tags = runpy.run_path(str(SCRIPT))["presence_tags"]
    scene = shapes.make_scene(3, n_objects=3)
    caption = scene.absent_caption(0)
    tags = presence_tags(scene, caption, caption.split())
    assert len(tags) == len(caption.split())
    assert tags.count("absent") == 2 and tags.count("present") == 4 and tags.count("separator") == 2
