"""benchmarks/finetune.py runs end to end on `--model-dir` (a tiny untrained shapes CLIP saved here) and reports."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
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


def small(model_dir: Path, cache: Path | None = None) -> list[str]:
    return ["--model-dir", str(model_dir), "--steps", "2", "--batch-size", "4", "--eval-scenes", "12",
            "--eval-pairs", "100", "--eval-singles", "12",
            *(["--no-cache"] if cache is None else ["--cache", str(cache)])]  # fmt: skip


def test_finetune_benchmark_reports_mean_and_spread_over_seeds(model_dir, tmp_path, capsys):
    main = runpy.run_path(str(FINETUNE))["main"]
    page = tmp_path / "page.md"
    argv = [*small(model_dir), "--seeds", "0", "1", "--json", str(tmp_path / "r.json"), "--write", str(page)]
    report = main(argv)
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))  # tuples as lists
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
    for key, limit in {"recall_at_1": 1, "zero_shot_top1": 1, "recall_at_5": 2}.items():  # on EVERY seed
        assert held[key] == (min(100 * (r["after"][key] - report["before"][key]) for r in report["runs"]) >= -limit)
    assert report["target_met"] == all(held.values())
    assert "target met" in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("# Region-phrase fine-tuning") and "--json" not in text and "--no-cache" not in text
    assert str(tmp_path) not in text and "--seeds 0 1 --write docs/page.md`" in text  # no path of this machine
    section = "<!-- finetune: --model-dir model: seeds, steps=2, batch_size=4 -->"  # a section per setting
    assert section in text and "anchor_weight=30.0, distill_weight=3.0, hard_negatives=True" in text
    r1 = report["change"]["recall_at_1"]
    per_seed = " / ".join(f"{c:+.1f}" for c in r1["changes"])
    assert f"| {r1['mean']:+.1f} +- {r1['std']:.1f} | {per_seed} | {r1['min']:+.1f} | every seed >= -1: " in text
    minutes = " / ".join(f"{r['minutes']:.1f}" for r in report["runs"])
    assert "| fine-tuning time, minutes | | | " in text and f" | {minutes} | | |" in text
    assert ("**met**" if report["target_met"] else "**not met**") in text

    variants = main([*small(model_dir), "--seeds", "0", "--variants", "plain", "plain-big-batch", "former", "anchor-10",
                     "maps-1", "maps-2", "train-maps", "two-three", "--write", str(page)])  # fmt: skip
    assert "change" not in variants and len(variants["runs"]) == 8
    plain = {"anchor_weight": 0.0, "distill_weight": 0.0, "hard_negatives": False}
    assert [r["changes"] for r in variants["runs"]] == [
        plain,
        {**plain, "batch_size": 12, "steps": 1},
        {"anchor_weight": 10.0, "map_block": -1},  # the first defaults, together and one at a time
        {"anchor_weight": 10.0},
        {"map_block": -1},
        {"map_layers": 2, "map_block": -1},  # the settings before, each change alone
        {"object_weights": None},
        {"train": "maps"},
    ]
    assert len({json.dumps(r["after"], sort_keys=True) for r in variants["runs"]}) > 1
    text = page.read_text()
    assert section in text and "<!-- finetune: --model-dir model: variants, steps=2, batch_size=4 -->" in text, (
        "both sections kept"
    )
    assert f"| {variants['runs'][0]['label']} |" in text


def test_object_weights_default_to_the_trained_mix_and_none_is_two_or_three_objects(model_dir, tmp_path, monkeypatch):
    import benchmarks.finetune as bench

    trained = []

    def record(model, processor, settings, seed):
        trained.append(settings["object_weights"])
        return model, 0.0

    monkeypatch.setattr(bench, "finetune", record)
    monkeypatch.setattr(bench, "measure", lambda *args: dict.fromkeys(KEYS, 0.5))
    page = tmp_path / "page.md"
    for weights in ([], ["none"], ["1", "0", "0"]):
        bench.main([*small(model_dir), "--seeds", "0", *(["--object-weights", *weights] if weights else []),
                    "--write", str(page)])  # fmt: skip
    assert trained == [(0.3, 0.5, 0.2), None, (1.0, 0.0, 0.0)]
    text = page.read_text()
    assert "<!-- finetune: --model-dir model: seeds, steps=2, batch_size=4 -->" in text
    assert "<!-- finetune: --model-dir model: seeds, steps=2, batch_size=4, object_weights=None -->" in text
    assert "seeds, steps=2, batch_size=4, object_weights=(1.0, 0.0, 0.0) -->" in text


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


def test_runs_are_cached_per_settings_and_seed_and_the_curve_reuses_them(model_dir, tmp_path, monkeypatch):
    import benchmarks.finetune as bench

    cache, page = tmp_path / "cache", tmp_path / "page.md"
    first = bench.main([*small(model_dir, cache), "--seeds", "0", "1"])
    assert len(list(cache.glob("*.json"))) == 3, "the model before, and one file per seed"
    assert not list(cache.glob("*.part")), "only complete results are kept"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(bench, "finetune", no_training)
    monkeypatch.setattr(bench, "measure", no_training)
    again = bench.main([*small(model_dir, cache), "--seeds", "1", "0"])
    assert [r["after"] for r in again["runs"]] == [first["runs"][1]["after"], first["runs"][0]["after"]]
    with pytest.raises(AssertionError, match="trained again"):  # another setting or seed is a run of its own
        bench.main([*small(model_dir, cache), "--seeds", "2"])
    with pytest.raises(AssertionError, match="trained again"):
        bench.main([*small(model_dir, cache), "--seeds", "0", "--anchor-weight", "10"])
    stored = next(p for p in cache.glob("*.json") if '"seed": 0' in p.read_text())
    stored.write_text(stored.read_text().replace('"seed": 0', '"seed": 7'))  # an edited file is not trusted
    with pytest.raises(AssertionError, match="trained again"):
        bench.main([*small(model_dir, cache), "--seeds", "0"])
    monkeypatch.undo()

    curve = bench.main([*small(model_dir, cache), "--seeds", "0", "1", "--curve", "30:3", "0:0", "--write", str(page)])
    assert [(p["anchor_weight"], p["distill_weight"]) for p in curve["curve"]] == [(30.0, 3.0), (0.0, 0.0)]
    assert [r["after"] for r in curve["runs"][:2]] == [r["after"] for r in again["runs"][::-1]], "the settings' runs"
    zero = curve["curve"][1]["change"]["recall_at_1"]
    changes = [100 * (r["after"]["recall_at_1"] - curve["before"]["recall_at_1"]) for r in curve["runs"][2:]]
    assert zero["changes"] == pytest.approx(changes, abs=0.01) and zero["min"] == pytest.approx(min(changes), abs=0.01)
    text = page.read_text()
    bench.main([*small(model_dir, cache), "--seeds", "0", "1", "--write", str(page)])  # cached: no training
    bench.main([*small(model_dir, cache), "--seeds", "0", "--anchor-weight", "10", "--write", str(page)])
    text = page.read_text()
    assert "<!-- finetune: --model-dir model: seeds, steps=2, batch_size=4 -->" in text
    assert "<!-- finetune: --model-dir model: seeds, steps=2, batch_size=4, anchor_weight=10.0 -->" in text
    assert (
        "<!-- finetune: --model-dir model: curve, steps=2, batch_size=4 -->" in text
        and "| 0 | 0 | " in text
        and "| 30 | 3 | " in text
    )


def test_bad_settings_are_named_before_any_run(model_dir, capsys):
    import benchmarks.finetune as bench

    for argv, message in [
        (["--map-block", "2"], "`map_block` must be an int in [-2, 1]"),
        (["--map-layers", "3", "--map-block", "-1"], "`map_layers` must be an int in [1, 2]"),
        (["--map-layers", "2"], "`map_layers` must be an int in [1, 1] (the blocks up to `map_block`); got 2"),
        (["--curve", "10"], "expected ANCHOR:DISTILL"),
        (["--object-weights", "0.5", "0.5"], "three non-negative numbers that sum to 1, or none; got 0.5 0.5"),
        (["--object-weights", "0.3", "0.5", "0.3"], "that sum to 1, or none; got 0.3 0.5 0.3"),
        (["--object-weights", "-0.1", "0.6", "0.5"], "three non-negative numbers"),
        (["--object-weights", "a", "b", "c"], "three non-negative numbers"),
        (["--object-weights", "none", "none"], "that sum to 1, or none; got none none"),
        (["--curve", "1:-3"], "must be non-negative"),
        (["--eval-pairs", "150"], "--eval-pairs must be a positive multiple of 100"),
        (["--variants", "nope"], "invalid choice: 'nope'"),
        (["--device", "tpu9"], "--device 'tpu9' cannot be used here: Invalid device string"),
        *([(["--device", "cuda"], "--device 'cuda' cannot be used here: ")] if not torch.cuda.is_available() else []),
    ]:
        with pytest.raises(SystemExit):
            bench.main([*small(model_dir), *argv])
        assert message in capsys.readouterr().err


def test_pixels_are_made_at_each_models_own_size_as_its_processor_makes_them():
    import benchmarks.finetune as bench
    from captum_gradeclip.zoo import shapes

    scenes = shapes.make_scenes(range(3))
    arrays = np.stack([s.array for s in scenes])
    for spec, side, depth in [("shapes", 64, 2), ("shapes:deep", 112, 6)]:
        model, processor = bench.load(None, spec)
        assert model.config.vision_config.num_hidden_layers == depth
        expected = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
        made = bench.pixel_function(processor)(arrays)
        assert made.shape == expected.shape == (3, 3, side, side)
        assert (made - expected).abs().max() < 1.5 / 255 / min(processor.image_processor.image_std), "1 grey level"
        pixels, _, _ = next(bench.batches(0, 2, pixels=bench.pixel_function(processor)))
        assert pixels.shape == (2, 3, side, side)


def test_train_maps_trains_the_map_blocks_and_above_and_the_image_head_only():
    import benchmarks.finetune as bench
    from tests.conftest import make_clip

    model = make_clip(vision_layers=4)
    names = [n for n, _ in model.named_parameters()]
    trains = bench.trainable_names(model, "maps", map_layers=2, map_block=-2)
    trained = {n for n in names if trains(n)}
    blocks = {n.split(".")[3] for n in trained if n.startswith("vision_model.encoder.layers.")}
    assert blocks == {"1", "2", "3"}, "blocks 1-2 draw the maps; block 3 lies between them and the head"
    assert {n for n in trained if not n.startswith("vision_model.encoder")} == {
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
        "visual_projection.weight",
    }
    assert bench.trainable_names(model, "all") is None
    assert not any(bench.trainable_names(model, "vision")(n) for n in names if n.startswith("text"))
    with pytest.raises(ValueError, match="`--train maps` needs an HF CLIPModel"):
        bench.trainable_names(torch.nn.Linear(2, 2), "maps")


def test_the_global_target_holds_on_every_seed_not_on_the_mean():
    import benchmarks.finetune as bench

    before = {
        "region_acc_mask": 0.5,
        "region_acc_box": 0.5,
        "recall_at_5": 1.0,
        "recall_at_1": 0.8,
        "zero_shot_top1": 0.9,
    }

    def after(region: float, recall_1: float, zero_shot: float) -> dict[str, float]:
        return {**before, "region_acc_mask": region, "recall_at_1": recall_1, "zero_shot_top1": zero_shot}

    # seed 0 loses 1.2 points of recall@1 (the mean, -0.4, would pass); zero-shot loses exactly 1.0 on one seed
    change = bench.summarise(before, [after(0.62, 0.788, 0.89), after(0.60, 0.804, 0.9)])
    assert change["recall_at_1"]["changes"] == [-1.2, 0.4] and change["recall_at_1"]["mean"] == -0.4
    assert change["recall_at_1"]["min"] == -1.2 and change["zero_shot_top1"]["min"] == -1.0
    assert change["region_acc_mask"]["mean"] == 11.0
    held = bench.verdict(change)
    assert held == {"region_acc_mask": True, "recall_at_5": True, "recall_at_1": False, "zero_shot_top1": True}
    assert not bench.verdict(bench.summarise(before, [after(0.59, 0.8, 0.9), after(0.6, 0.8, 0.9)]))["region_acc_mask"]


def _per_seed(section: str, row: str) -> list[float]:
    """The per-seed changes of a row of a seeds table of docs/finetune.md."""
    line = next(line for line in section.splitlines() if line.startswith(f"| {row} |"))
    cell = line.split("|")[5]  # measure | before | after | change | per seed (one seed: one number) | ...
    return [float(x) for x in cell.split(" / ")]


def test_the_readmes_finetuning_claim_matches_the_page_per_seed():
    import re

    root = Path(__file__).parents[1]
    page, readme = (root / "docs" / "finetune.md").read_text(), " ".join((root / "README.md").read_text().split())
    sections = dict(re.findall(r"<!-- finetune: (.+?) -->\n(.*?)<!-- /finetune: \1 -->", page, re.DOTALL))
    claims = {"shapes": "on the 2-layer ViT", "shapes:deep": "on ShapesCLIP-Deep"}
    for model, where in claims.items():
        section = sections.get(f"{model}: seeds")
        if section is None:
            assert f"{where.removeprefix('on ')} it is being measured" in readme, f"{model}: no result, no claim"
            continue
        worst = min(min(_per_seed(section, name)) for name in ("image-to-text recall@1 among 100 captions",
                                                               "single-object zero-shot top-1"))  # fmt: skip
        region = float(
            re.search(r"\| region zero-shot accuracy, object masks \|[^|]*\|[^|]*\| ([+-][\d.]+)", section)[1]
        )
        holds = worst >= -1 and region >= 10
        claim = f'"without sacrificing global performance" {"holds" if holds else "does **not** hold"} on every seed'
        assert f"{claim} {where}" in readme, f"README must say: {claim} {where}"
        gains = _per_seed(section, "region zero-shot accuracy, object masks")
        stated = f"{region:+.1f} points on the masks ({min(gains):+.1f} to {max(gains):+.1f} per seed"
        assert stated in readme, f"README must state the page's region gain {where}: {stated}"
