"""Pointing game and energy pointing game on maps with known peaks and masses."""

from __future__ import annotations

import pytest
import torch

from captum_gradeclip.metrics import boxes_to_masks, energy_pointing_game, pointing_game


def _peak(y, x, size=(20, 20)):
    m = torch.zeros(1, 1, *size)
    m[0, 0, y, x] = 1.0
    return m


def test_boxes_to_masks_uses_pixel_centres_and_unites_boxes():
    masks = boxes_to_masks([torch.tensor([[2, 1, 5, 3]]), torch.tensor([[0, 0, 1, 1], [3, 3, 4, 4]])], (5, 6))
    expected = torch.zeros(2, 5, 6, dtype=torch.bool)
    expected[0, 1:3, 2:5] = True
    expected[1, 0, 0] = expected[1, 3, 3] = True
    assert torch.equal(masks, expected)
    assert torch.equal(boxes_to_masks(torch.tensor([[2, 1, 5, 3]]), (5, 6)), expected[:1])


def test_pointing_game_hits_misses_and_tolerance():
    box = torch.tensor([[5, 5, 10, 10]])  # pixels 5..9
    assert pointing_game(_peak(7, 7), boxes=box, image_size=(20, 20)).tolist() == [1.0]
    assert pointing_game(_peak(7, 12), boxes=box, image_size=(20, 20)).tolist() == [0.0]  # 3 px right of the box
    assert pointing_game(_peak(7, 12), boxes=box, image_size=(20, 20), tolerance=3).tolist() == [1.0]
    assert pointing_game(_peak(7, 12), boxes=box, image_size=(20, 20), tolerance=2.9).tolist() == [0.0]
    masks = boxes_to_masks(box, (20, 20))
    maps = torch.cat([_peak(7, 7), _peak(0, 0)])
    assert pointing_game(maps, masks=masks.expand(2, 20, 20)).tolist() == [1.0, 0.0]


def test_pointing_game_reads_the_peak_as_row_then_column():
    # peaks and boxes that are not symmetric in y and x, on a non-square image: a peak read as (x, y)
    # lands elsewhere
    size = (20, 30)
    box = torch.tensor([[13, 0, 18, 5]])  # x 13..17, y 0..4
    assert pointing_game(_peak(2, 15, size), boxes=box, image_size=size).tolist() == [1.0]
    assert pointing_game(_peak(15, 2, size), boxes=box, image_size=size).tolist() == [0.0]
    # 4 rows below the box, right under its middle: a hit from 4 pixels on, whatever the orientation of the box
    assert pointing_game(_peak(8, 15, size), boxes=box, image_size=size, tolerance=4).tolist() == [1.0]
    assert pointing_game(_peak(8, 15, size), boxes=box, image_size=size, tolerance=3.9).tolist() == [0.0]
    tall = boxes_to_masks(torch.tensor([[25, 3, 27, 19]]), size)  # a thin vertical bar at x 25..26
    maps = torch.cat([_peak(17, 26, size), _peak(6, 17, size)])
    assert pointing_game(maps, masks=tall.expand(2, *size)).tolist() == [1.0, 0.0]


def test_pointing_game_upsamples_coarse_maps():
    coarse = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[:, 10:, 10:] = True
    assert pointing_game(coarse, masks=mask, interpolate_mode="nearest").tolist() == [1.0]
    assert pointing_game((coarse,), masks=~mask).tolist() == [0.0]


def test_energy_pointing_game_known_fractions():
    mask = torch.zeros(3, 20, 20, dtype=torch.bool)
    mask[:, :10, :10] = True
    maps = torch.ones(3, 1, 20, 20)
    maps[1] = -1.0
    maps[1, :, :10, :10] = 2.0  # all positive mass inside
    maps[2] = 0.0  # no positive mass
    torch.testing.assert_close(energy_pointing_game(maps, masks=mask), torch.tensor([0.25, 1.0, 0.0]))
    boxes = torch.tensor([[0, 0, 10, 10]] * 3)
    torch.testing.assert_close(energy_pointing_game(maps, boxes=boxes, image_size=(20, 20)), torch.tensor([0.25, 1, 0]))


def test_bad_arguments():
    m = _peak(1, 1)
    with pytest.raises(ValueError, match="exactly one"):
        pointing_game(m)
    with pytest.raises(ValueError, match="image_size"):
        pointing_game(m, boxes=torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="same N"):
        energy_pointing_game(m, masks=torch.ones(2, 20, 20))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(m, masks=torch.ones(1, 20, 20), tolerance=-1)
