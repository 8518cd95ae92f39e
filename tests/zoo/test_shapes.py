"""The shapes world: seeded, ground truth consistent with the pixels, captions that match the objects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gradeclip.zoo import shapes


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b, c = shapes.make_scene(5), shapes.make_scene(5), shapes.make_scene(6)
    assert np.array_equal(a.array, b.array) and a.caption == b.caption
    assert a.boxes == b.boxes and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.array, c.array)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([None, 1, 2, 3]))
def test_ground_truth_matches_pixels(seed, n):
    scene = shapes.make_scene(seed, n_objects=n)
    size = shapes.IMAGE_SIZE
    assert scene.image.mode == "RGB" and scene.image.size == (size, size) and scene.array.shape == (size, size, 3)
    assert len(scene.objects) == n if n else 1 <= len(scene.objects) <= 3
    pairs = [(o.colour, o.shape) for o in scene.objects]
    assert len(set(pairs)) == len(pairs), "objects are distinct colour-shape pairs"
    masks = scene.masks
    assert masks.shape == (len(pairs), size, size) and masks.dtype == bool
    assert masks.sum(0).max() == 1, "objects do not overlap"
    pixels = scene.array.astype(float) / 255
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        inside = np.zeros_like(obj.mask)
        inside[y0:y1, x0:x1] = True
        assert obj.mask.any() and not (obj.mask & ~inside).any(), "the mask lies in its box"
        colour = pixels[obj.mask].mean(0)
        # colour jitter (sigma 0.04 per channel) and pixel noise: within 5 sigma of the named colour
        assert np.abs(colour - shapes.COLOURS[obj.colour]).max() < 0.2, (obj, colour)
    background = pixels[~masks.any(0)]
    mean = background.mean(0)
    assert np.ptp(mean) < 0.02 and 0.25 < mean.mean() < 0.6, "background is grey"
    assert background.std(0).min() > 0.02, "background is noisy"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_caption_names_the_objects_in_order(seed):
    scene = shapes.make_scene(seed)
    assert scene.caption == shapes.caption([(o.colour, o.shape) for o in scene.objects])
    assert scene.words == tuple(scene.caption.split())
    positions = [scene.caption.index(p) for p in scene.prompts]
    assert positions == sorted(positions)
    assert set(scene.words) <= set(shapes.VOCABULARY)


def test_caption_format():
    assert shapes.caption([("red", "circle")]) == "a red circle"
    assert shapes.caption([("red", "circle"), ("blue", "square")]) == "a red circle and a blue square"
    assert (
        shapes.caption([("red", "circle"), ("blue", "square"), ("green", "cross")])
        == "a red circle , a blue square and a green cross"
    )


def test_world_covers_every_colour_shape_and_count_in_random_order():
    scenes = shapes.make_scenes(range(400))
    assert len(shapes.COLOURS) >= 6 and len(shapes.SHAPES) >= 4
    seen = {(o.colour, o.shape) for s in scenes for o in s.objects}
    assert seen == set(itertools.product(shapes.COLOURS, shapes.SHAPES))
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    sizes = [o.box[2] - o.box[0] for s in scenes for o in s.objects]
    assert max(sizes) - min(sizes) >= 8, "random sizes"
    centres = np.array([((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for s in scenes for o in s.objects])
    assert centres.std(0).min() > 10, "random positions"
    firsts = [s.objects[0].colour < s.objects[1].colour for s in scenes if len(s.objects) == 2]
    assert 0.3 < np.mean(firsts) < 0.7, "caption order is random"


@pytest.mark.parametrize(
    ("shape", "fill"), [("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5), ("cross", 5 / 9)]
)
def test_shape_masks_fill_their_box_as_the_geometry_says(shape, fill):
    fills = [
        o.mask.sum() / ((o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
        for s in shapes.make_scenes(range(300))
        for o in s.objects
        if o.shape == shape
    ]
    assert abs(np.mean(fills) - fill) < 0.08


def test_absent_prompts_and_caption_name_objects_not_in_the_scene():
    scene = shapes.make_scene(3, n_objects=2)
    absent = scene.absent_prompts
    assert len(absent) == len(shapes.all_prompts()) - 2 and not set(absent) & set(scene.prompts)
    for seed in range(10):
        text = scene.absent_caption(seed)
        named = [p for p in shapes.all_prompts() if p in text]
        assert len(named) == 2 and sum(p in absent for p in named) == 1, text


def test_swapped_caption_keeps_colours_and_shapes_but_rebinds_them():
    scene = next(
        s for s in shapes.make_scenes(range(50), n_objects=2) if len({o.colour for o in s.objects}) == 2
        and len({o.shape for o in s.objects}) == 2
    )  # fmt: skip
    swapped = shapes.swapped_caption(scene)
    assert swapped is not None and swapped != scene.caption
    assert sorted(swapped.split()) == sorted(scene.caption.split())
    assert not set(scene.prompts) & {p for p in shapes.all_prompts() if p in swapped}
    assert shapes.swapped_caption(shapes.make_scene(0, n_objects=1)) is None


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"`n_objects` must be in 1\.\.3"):
        shapes.make_scene(0, n_objects=4)
    with pytest.raises(ValueError, match="`n_objects`"):
        shapes.make_scene(0, n_objects=0)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        shapes.make_scene("7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`image_size` must be at least 32"):
        shapes.make_scene(0, image_size=16)
    with pytest.raises(ValueError, match="`colour` must be one of"):
        shapes.prompt("pink", "circle")
    with pytest.raises(ValueError, match="`shape` must be one of"):
        shapes.prompt("red", "star")
    with pytest.raises(ValueError, match="`pairs` must name at least one object"):
        shapes.caption([])


def test_other_image_sizes_scale_the_objects():
    scene = shapes.make_scene(1, n_objects=3, image_size=128)
    assert scene.image.size == (128, 128) and min(o.box[2] - o.box[0] for o in scene.objects) >= 24
