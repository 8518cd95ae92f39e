"""The torch batch renderer draws the shapes world of :func:`shapes.render`: exact masks and background for
the same layout, the same statistics for fresh seeds, and the world's invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captum_gradeclip.zoo import shapes
from captum_gradeclip.zoo import shapes_batch as sb

N = 1500  # scenes per renderer in the statistics test: sampling error well under the tolerances below


def _batch(counts, seed=0, image_size=64):
    pairs = sb.sample_pairs(np.asarray(counts), np.random.default_rng(seed))
    return sb.render_batch(pairs, torch.Generator().manual_seed(seed), image_size)


def test_masks_equal_the_numpy_renderers_for_the_same_boxes_and_shapes():
    for size in (64, 112):
        for scene in shapes.make_scenes(range(150), image_size=size):
            index = torch.tensor([shapes.SHAPES.index(o.shape) for o in scene.objects])
            masks = sb.shape_masks(index, torch.tensor(scene.boxes), size)
            assert np.array_equal(masks.numpy(), scene.masks), (size, scene.caption)


@pytest.mark.parametrize("size", [64, 112])
def test_background_blotches_equal_pils_bilinear_resize(size):
    coarse = np.random.default_rng(size).normal(0.0, 0.06, (4, 4)).astype(np.float32)
    expected = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    got = sb.blotches(torch.from_numpy(coarse)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_batch_statistics_match_the_numpy_renderer():
    batch = _batch(np.full(N, 3), seed=1)
    rng = np.random.default_rng(2)
    arrays, masks, sizes = [], [], []
    for _ in range(N):
        array, objects = shapes.render(rng, 3)
        arrays.append(array)
        masks.append(np.stack([o.mask for o in objects]))
        sizes.append([o.box[2] - o.box[0] for o in objects])
    theirs = np.stack(arrays).transpose(0, 3, 1, 2) / 255.0
    ours = batch.images.numpy() / 255.0
    our_masks, their_masks = batch.masks().numpy(), np.stack(masks)
    assert abs(ours.mean() - theirs.mean()) < 0.004 and abs(ours.std() - theirs.std()) < 0.004
    our_bg = ours.transpose(0, 2, 3, 1)[~our_masks.any(1)]
    their_bg = theirs.transpose(0, 2, 3, 1)[~their_masks.any(1)]
    assert abs(our_bg.mean() - their_bg.mean()) < 0.004 and abs(our_bg.std() - their_bg.std()) < 0.004
    our_sizes = (batch.boxes[..., 2] - batch.boxes[..., 0]).numpy()
    np.testing.assert_allclose(our_sizes.mean(0), np.mean(sizes, 0), atol=0.3)  # later objects are smaller
    np.testing.assert_allclose(our_sizes.std(0), np.std(sizes, 0), atol=0.25)
    np.testing.assert_allclose(our_masks.sum((2, 3)).mean(0), their_masks.sum((2, 3)).mean(0), rtol=0.04)
    tints = np.stack([ours[b][:, our_masks[b, 0]].mean(1) for b in range(50)])
    palette = sb.PALETTE.numpy()[batch.pairs[:50, 0].numpy() // len(shapes.SHAPES)]
    assert np.abs(tints - palette).max() < 0.2 and np.abs(tints - palette).mean() < 0.05


def test_invariants_objects_distinct_inside_and_two_pixels_apart():
    counts = np.random.default_rng(3).integers(1, 4, 2000)
    batch = _batch(counts, seed=3)
    pairs, boxes = batch.pairs.numpy(), batch.boxes.numpy()
    assert np.array_equal((pairs >= 0).sum(1), counts) and np.array_equal(batch.counts.numpy(), counts)
    masks = batch.masks()
    assert int(masks.sum(1).max()) == 1, "objects never overlap"
    for row, n in zip(range(len(counts)), counts, strict=True):
        present = pairs[row, :n]
        assert len(set(present.tolist())) == n and present.min() >= 0 and present.max() < 24
        assert (pairs[row, n:] == -1).all() and (boxes[row, n:] == -1).all()
        for i in range(n):
            x0, y0, x1, y1 = boxes[row, i]
            assert x1 - x0 == y1 - y0 and 16 <= x1 - x0 <= 26 and x0 >= 1 and y0 >= 1 and x1 <= 63 and y1 <= 63
            for j in range(i):
                a, b = boxes[row, i], boxes[row, j]
                assert a[0] >= b[2] + 2 or b[0] >= a[2] + 2 or a[1] >= b[3] + 2 or b[1] >= a[3] + 2
    first = np.bincount(pairs[:, 0], minlength=24) / len(counts)
    assert np.abs(first - 1 / 24).max() < 0.025, "pairs are uniform"


def test_seeded_and_every_shape_is_drawn():
    a, b, c = _batch([3] * 64, seed=4), _batch([3] * 64, seed=4), _batch([3] * 64, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.images, c.images)
    assert set((a.pairs % len(shapes.SHAPES)).flatten().tolist()) == set(range(len(shapes.SHAPES)))
    assert a.images.dtype == torch.uint8 and a.images.shape == (64, 3, 64, 64)


def test_bad_input_is_a_clear_error():
    rng, generator = np.random.default_rng(0), torch.Generator()
    with pytest.raises(ValueError, match=r"`counts` must be a 1-d array of ints in 1\.\.3"):
        sb.sample_pairs(np.array([1, 4]), rng)
    with pytest.raises(ValueError, match=r"`counts` must be a 1-d array of ints in 1\.\.3"):
        sb.sample_pairs(np.array([0, 1]), rng)
    with pytest.raises(ValueError, match=r"`pairs` must be \(B, 3\) with an object in every first column"):
        sb.render_batch(np.array([[-1, -1, -1]]), generator)
    with pytest.raises(ValueError, match=r"`pairs` must be \(B, 3\)"):
        sb.render_batch(np.array([1, 2, 3]), generator)
    with pytest.raises(ValueError, match="`image_size` must be at least 32; got 16"):
        sb.render_batch(np.array([[1, -1, -1]]), generator, image_size=16)
