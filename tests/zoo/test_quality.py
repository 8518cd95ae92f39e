"""Held-out quality measures on an untrained model: chance-level numbers, fractions that add up, no side effects."""

from __future__ import annotations

import pytest

from tools import shapes_quality as quality
from tools import train_shapes as ts


@pytest.fixture(scope="module")
def untrained():
    config = ts.TrainConfig(width=32, vision_layers=1, text_layers=1, heads=2, projection_dim=16)
    return ts.build_model(config).train(), ts.build_processor()


def test_an_untrained_model_scores_near_chance_and_is_left_in_train_mode(untrained):
    model, processor = untrained
    result = quality.evaluate(model, processor, n_single=48, n_pair=100)
    assert model.training, "the train/eval flag is restored"
    assert result["zero_shot_top1"] < 0.3, "chance is 1/24"
    assert result["pair_top2_both_present"] < 0.3, "chance is 1/276"
    assert 0.0 <= result["pair_recall_at_5"] < 0.5, "chance is 5/100"
    for prefix in ("", "softmax_"):
        pointing = [result[f"{prefix}pointing_{k}"] for k in ("named", "other", "background")]
        assert abs(sum(pointing) - 1.0) < 1e-9 and all(0 <= p <= 1 for p in pointing)


def test_pointing_game_counts_every_object_of_every_scene(untrained):
    from captum_gradeclip.zoo import shapes

    model, processor = untrained
    scenes = shapes.make_scenes(range(3), n_objects=3)
    result = quality.pointing_game(model, processor, scenes)
    assert set(result) == {"named", "other", "background", "named_cell"}
    assert all(abs(v * 9 - round(v * 9)) < 1e-9 for v in result.values()), "fractions of 9 (scene, object) pairs"


def test_pair_count_must_be_a_multiple_of_100(untrained):
    with pytest.raises(ValueError, match="`n_pair` must be a positive multiple of 100; got 150"):
        quality.evaluate(*untrained, n_pair=150)
