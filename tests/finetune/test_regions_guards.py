"""The fine-tuning loss terms against hand-written oracles, and their input checks (the mutation run's
survivors): the region-phrase loss at any scale and weighting, the anchor term on non-square batches."""

from __future__ import annotations

import math

import pytest
import torch

from captum_gradeclip.finetune import anchor_distance, region_phrase_loss


def cross_entropy_by_hand(regions, phrases, targets, scale):
    losses = []
    for region, target in zip(regions.tolist(), targets.tolist(), strict=True):
        cosines = [
            sum(a * b for a, b in zip(region, p, strict=True))
            / math.sqrt(sum(a * a for a in region) * sum(b * b for b in p))
            for p in phrases.tolist()
        ]
        logits = [scale * c for c in cosines]
        top = max(logits)
        losses.append(top + math.log(sum(math.exp(v - top) for v in logits)) - logits[target])
    return losses


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g), torch.tensor([0, 2, 2, 1])


def test_region_phrase_loss_is_the_mean_cross_entropy_of_scaled_cosines(batch):
    regions, phrases, targets = batch
    default = cross_entropy_by_hand(regions, phrases, targets, 20.0)  # the default scale is 20
    assert float(region_phrase_loss(regions, phrases, targets)) == pytest.approx(sum(default) / 4, rel=1e-5)
    losses = cross_entropy_by_hand(regions, phrases, targets, 3.5)
    assert float(region_phrase_loss(regions, phrases, targets, scale=3.5)) == pytest.approx(sum(losses) / 4, rel=1e-5)


def test_region_phrase_loss_weights_each_region_and_normalises_by_the_weights(batch):
    regions, phrases, targets = batch
    losses = cross_entropy_by_hand(regions, phrases, targets, 20.0)
    weights = torch.tensor([0.0, 2.0, 0.5, 1.0])  # a zero weight is allowed: that region does not count
    expected = sum(w * v for w, v in zip(weights.tolist(), losses, strict=True)) / float(weights.sum())
    assert float(region_phrase_loss(regions, phrases, targets, weights)) == pytest.approx(expected, rel=1e-5)
    assert float(region_phrase_loss(regions, phrases, targets, torch.zeros(4))) == 0.0  # no weight: 0, not NaN
    small = torch.tensor([0.1, 0.2, 0.0, 0.1])  # weights summing to less than 1 are normalised too
    expected = sum(w * v for w, v in zip(small.tolist(), losses, strict=True)) / float(small.sum())
    assert float(region_phrase_loss(regions, phrases, targets, small)) == pytest.approx(expected, rel=1e-5)


def test_region_phrase_loss_refuses_bad_shapes_and_negative_weights(batch):
    regions, phrases, targets = batch
    shapes = r"^`regions` must be \(R, E\), `phrase_embeds` \(U, E\) and `targets` \(R,\)$"
    for args in [(regions[0], phrases, targets[:1]), (regions, phrases[0], targets), (regions, phrases, targets[:3])]:
        with pytest.raises(ValueError, match=shapes):
            region_phrase_loss(*args)
    for weights in (torch.ones(3), torch.ones(4, 1), torch.tensor([1.0, -0.5, 1.0, 1.0])):
        with pytest.raises(ValueError, match=r"^`weights` must be \(4,\) and non-negative$"):
            region_phrase_loss(regions, phrases, targets, weights)


def test_anchor_distance_is_the_mean_cosine_distance_per_row_and_leaves_the_frozen_side_alone():
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(3, 5, generator=g, requires_grad=True)  # 3 rows of 5: rows, not columns, are compared
    frozen = torch.randn(3, 5, generator=g, requires_grad=True)
    by_hand = [
        1 - sum(a * b for a, b in zip(e, f, strict=True)) / math.sqrt(sum(a * a for a in e) * sum(b * b for b in f))
        for e, f in zip(embeds.tolist(), frozen.tolist(), strict=True)
    ]
    distance = anchor_distance(embeds, frozen)
    assert float(distance.detach()) == pytest.approx(sum(by_hand) / 3, rel=1e-5)
    distance.backward()
    assert embeds.grad is not None and frozen.grad is None  # the frozen embeddings are a fixed target


def test_anchor_distance_refuses_other_shapes_naming_both():
    shapes = r"^`embeds` and `frozen` must both be \(N, E\) of one shape; got \(3, 4\), \(3, 5\)$"
    with pytest.raises(ValueError, match=shapes):
        anchor_distance(torch.ones(3, 4), torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"got \(4,\), \(4,\)$"):
        anchor_distance(torch.ones(4), torch.ones(4))
