"""RISE: known maps for known masks, batching invariance, random masks."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.baselines import RISE
from captum_gradeclip.baselines.rise import _DRAW, rise_masks
from tests.conftest import make_clip


@pytest.fixture
def sim():
    return cg.ImageTextSimilarity(make_clip(13), text_embeds=torch.randn(3, 16))


def test_all_ones_masks_give_a_constant_map_equal_to_the_score(sim):
    x = torch.randn(2, 3, 32, 32)
    maps = RISE(sim, masks=torch.ones(5, 32, 32)).attribute(x, target=1)
    expected = sim(x)[:, 1].detach()
    assert maps.shape == (2, 1, 32, 32)
    torch.testing.assert_close(maps, expected[:, None, None, None].expand(2, 1, 32, 32))


def test_two_known_masks_give_the_known_weighted_mean(sim):
    x = torch.randn(1, 3, 32, 32)
    left = torch.zeros(32, 32)
    left[:, :16] = 1
    masks = torch.stack([torch.ones(32, 32), left])
    maps = RISE(sim, masks=masks, baseline=0.5).attribute(x, target=2)[0, 0]
    full = sim(x)[0, 2]
    half = sim(x * left + 0.5 * (1 - left))[0, 2]
    mean_mask = masks.mean()  # 0.75
    torch.testing.assert_close(maps[:, 20], (full / (2 * mean_mask)).expand(32).detach())
    torch.testing.assert_close(maps[:, 3], ((full + half) / (2 * mean_mask)).expand(32).detach())


def test_batch_size_does_not_change_the_map_and_target_none_matches(sim):
    x = torch.randn(3, 3, 32, 32)
    big = RISE(sim, n_masks=12, batch_size=100).attribute(x)
    small = RISE(sim, n_masks=12, batch_size=8).attribute(x)
    assert big.shape == (3, 3, 32, 32)
    torch.testing.assert_close(big, small, rtol=1e-5, atol=1e-6)
    one = RISE(sim, n_masks=12, batch_size=7).attribute(x, target=[2, 0, 1])
    torch.testing.assert_close(one[:, 0], big[torch.arange(3), torch.tensor([2, 0, 1])], rtol=1e-5, atol=1e-6)


def test_random_masks_over_several_draws_and_batches_match_the_formula_by_hand(sim):
    # more masks than one draw of the generator, several mask blocks and several image batches: each
    # mask must meet its own images, and the sum is divided by n * p (not by n, not by the masks' mean)
    n_masks, p, seed = _DRAW + 6, 0.3, 4
    x = torch.randn(3, 3, 32, 32)
    g = torch.Generator().manual_seed(seed)
    masks = torch.cat([rise_masks(min(_DRAW, n_masks - s), (32, 32), 5, p, g) for s in range(0, n_masks, _DRAW)])
    assert masks.shape[0] == n_masks and abs(float(masks.mean()) - p) > 1e-3
    with torch.no_grad():
        scores = torch.stack([sim(x * m + 0.25 * (1 - m))[:, [2, 0, 1]].diagonal() for m in masks], 1)  # (3, n)
    expected = torch.einsum("in,nhw->ihw", scores, masks)[:, None] / (n_masks * p)
    for batch_size in (2, 7, 500):  # images split over batches; 3, 2 or all masks per pass
        got = RISE(sim, n_masks=n_masks, grid=5, p=p, seed=seed, baseline=0.25, batch_size=batch_size).attribute(
            x, target=[2, 0, 1]
        )
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_random_masks_are_seeded_in_range_and_keep_about_p():
    g = torch.Generator().manual_seed(0)
    masks = rise_masks(400, (32, 40), grid=4, p=0.3, generator=g)
    assert masks.shape == (400, 32, 40)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.05
    again = rise_masks(400, (32, 40), grid=4, p=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_bad_arguments(sim):
    with pytest.raises(ValueError, match="n_masks"):
        RISE(sim, n_masks=0)
    with pytest.raises(ValueError, match="`p`"):
        RISE(sim, p=1.5)
    with pytest.raises(ValueError, match="masks"):
        RISE(sim, masks=torch.ones(2, 3, 32, 32))
    with pytest.raises(ValueError, match="input size"):
        RISE(sim, masks=torch.ones(2, 16, 16)).attribute(torch.randn(1, 3, 32, 32), target=0)
