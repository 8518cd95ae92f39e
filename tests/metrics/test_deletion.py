"""Image deletion and insertion: known curves on a model whose score is a region's brightness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum_gradeclip as cg
from captum_gradeclip.metrics import baseline_images, image_deletion, image_insertion
from tests.conftest import make_clip


class RegionBrightness(nn.Module):
    """Column 0: the mean of the top-left 10x10 block (times an optional per-image scale); column 1: 0.5."""

    def forward(self, x, scale=None):
        s = x[:, :, :10, :10].mean((1, 2, 3))
        s = s if scale is None else s * scale
        return torch.stack([s, torch.full_like(s, 0.5)], dim=1)


def _region_map(first=True):
    m = torch.zeros(1, 1, 20, 20)
    m[..., :10, :10] = 1.0
    return m if first else 1 - m


ONES = torch.ones(1, 3, 20, 20)


def test_region_first_gives_the_known_deletion_and_insertion_curves():
    f = RegionBrightness()
    d = image_deletion(f, ONES, _region_map(), target=0, baseline="black")
    expected = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2] + [0.0] * 16)
    torch.testing.assert_close(d.fractions, torch.linspace(0, 1, 21))
    torch.testing.assert_close(d.scores[0], expected)
    torch.testing.assert_close(d.auc, torch.tensor([0.125]))
    i = image_insertion(f, ONES, _region_map(), target=0, baseline="black")
    torch.testing.assert_close(i.scores[0], 1 - expected)
    torch.testing.assert_close(i.auc, torch.tensor([0.875]))


def test_region_last_deletes_slowly_and_batching_keeps_images_apart():
    f = RegionBrightness()
    x = torch.ones(2, 3, 20, 20)
    maps = torch.cat([_region_map(True), _region_map(False)])
    for batch_size in (1, 7, 1000):
        d = image_deletion(f, x, maps, target=0, baseline="black", batch_size=batch_size)
        torch.testing.assert_close(d.auc, torch.tensor([0.125, 0.875]))


def test_low_resolution_maps_and_pixel_attributions_are_accepted():
    f = RegionBrightness()
    coarse = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # upsampled by LayerAttribution.interpolate
    a = image_deletion(f, ONES, coarse, target=0, baseline="black", interpolate_mode="nearest")
    torch.testing.assert_close(a.auc, torch.tensor([0.125]))
    pixels = _region_map().expand(1, 3, 20, 20) / 3  # e.g. IntegratedGradients' (N, C, H, W)
    b = image_deletion(f, ONES, (pixels,), target=0, baseline="black")
    torch.testing.assert_close(b.auc, torch.tensor([0.125]))
    hw = image_deletion(f, ONES, _region_map()[:, 0], target=0, baseline="black")
    torch.testing.assert_close(hw.auc, torch.tensor([0.125]))


def test_paper_protocol_steps_half_a_percent_up_to_half():
    d = image_deletion(RegionBrightness(), ONES, _region_map(), target=0, baseline="black", protocol="paper")
    assert d.fractions.shape == (101,) and float(d.fractions[-1]) == 0.5
    torch.testing.assert_close(d.fractions[1], torch.tensor(0.005))
    torch.testing.assert_close(d.scores[0, :51], torch.clamp(1 - torch.arange(51) / 50, min=0))
    torch.testing.assert_close(d.auc, torch.tensor([0.125]))


def test_zero_shot_top_k_measures():
    f = RegionBrightness()
    top1 = image_deletion(f, ONES, _region_map(), target=0, baseline="black", measure="top1", steps=10)
    torch.testing.assert_close(top1.scores[0], torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]))  # 100%, 60%, 20% left
    top5 = image_deletion(f, ONES, _region_map(), target=0, baseline="black", measure="top5", steps=10)
    assert (top5.scores == 1).all()


def test_additional_forward_args_follow_their_image():
    f = RegionBrightness()
    x = torch.ones(2, 3, 20, 20)
    maps = _region_map().expand(2, 1, 20, 20)
    scale = torch.tensor([1.0, 2.0])
    d = image_deletion(f, x, maps, target=0, additional_forward_args=(scale,), baseline="black", batch_size=5)
    torch.testing.assert_close(d.auc, torch.tensor([0.125, 0.25]))


def test_baseline_images():
    x = torch.rand(2, 3, 16, 16)
    norm = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    torch.testing.assert_close(baseline_images(x, "black", norm), torch.full_like(x, -2.0))
    torch.testing.assert_close(baseline_images(x, "mean"), x.mean((2, 3), keepdim=True).expand_as(x))
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(baseline_images(flat, "blur"), flat)
    assert baseline_images(x, "blur").std() < x.std()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r = baseline_images(x, "random", generator=g1)
    assert torch.equal(r, baseline_images(x, "random", generator=g2)) and 0 <= r.min() and r.max() <= 1
    again = baseline_images(x, "random", norm, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, (r - 0.5) / 0.25)
    torch.testing.assert_close(baseline_images(x, 0.7), torch.full_like(x, 0.7))
    with pytest.raises(ValueError, match="baseline"):
        baseline_images(x, "grey")


def test_ends_of_the_curves_are_the_unperturbed_scores_on_a_real_wrapper():
    sim = cg.ImageTextSimilarity(make_clip(3), text_embeds=torch.randn(4, 16))
    x = torch.randn(3, 3, 32, 32)
    maps = cg.GradECLIP(sim).attribute(x, target=[0, 2, 3])
    d = image_deletion(sim, x, maps, target=[0, 2, 3], steps=5, baseline="mean")
    i = image_insertion(sim, x, maps, target=[0, 2, 3], steps=5)
    original = sim(x).detach()[torch.arange(3), torch.tensor([0, 2, 3])]
    torch.testing.assert_close(d.scores[:, 0], original)
    torch.testing.assert_close(i.scores[:, -1], original)
    mean_image = x.mean((2, 3), keepdim=True).expand_as(x)
    torch.testing.assert_close(d.scores[:, -1], sim(mean_image).detach()[torch.arange(3), torch.tensor([0, 2, 3])])


def test_bad_arguments():
    f = RegionBrightness()
    with pytest.raises(ValueError, match="target"):
        image_deletion(f, ONES, _region_map(), target=None)
    with pytest.raises(ValueError, match="one map per example"):
        image_deletion(f, ONES, torch.ones(1, 2, 5, 5), target=0)
    with pytest.raises(ValueError, match="one map per input"):
        image_deletion(f, ONES, torch.ones(2, 1, 5, 5), target=0)
    with pytest.raises(ValueError, match="steps"):
        image_deletion(f, ONES, _region_map(), target=0, steps=0)
    with pytest.raises(ValueError, match="protocol"):
        image_deletion(f, ONES, _region_map(), target=0, protocol="half")
    with pytest.raises(ValueError, match="measure"):
        image_deletion(f, ONES, _region_map(), target=0, measure="top3")
    with pytest.raises(ValueError, match="NaN"):
        image_deletion(f, ONES, torch.full((1, 1, 5, 5), float("nan")), target=0)
    with pytest.raises(ValueError, match="batch_size"):
        image_insertion(f, ONES, _region_map(), target=0, batch_size=0)
