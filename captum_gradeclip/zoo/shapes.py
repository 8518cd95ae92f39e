"""The shapes world: seeded scenes of coloured shapes with known masks, boxes and captions.

Every scene holds 1 to 3 non-overlapping objects, each a distinct ``(colour, shape)`` pair drawn
from :data:`COLOURS` x :data:`SHAPES`, at a random size and position on a noisy grey background
(low-frequency blotches plus per-pixel noise).
Because every object's mask is known, the world is a ground truth for explanations: a map for
"a red circle" should sit on the red circle.

Examples::

    >>> from captum_gradeclip.zoo import shapes
    >>> scene = shapes.make_scene(7)
    >>> scene.caption
    'a green triangle , a yellow square and a red square'
    >>> scene.image.size, scene.masks.shape
    ((64, 64), (3, 64, 64))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: Colour names and their RGB values in [0, 1].
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.15, 0.70, 0.22),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.58, 0.22, 0.75),
    "cyan": (0.15, 0.80, 0.85),
}
#: Shape names.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
#: Every word a caption can use, for building a word-level tokenizer.
VOCABULARY: tuple[str, ...] = ("a", "and", ",", *COLOURS, *SHAPES)

IMAGE_SIZE = 64
MAX_OBJECTS = 3


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene.

    Attributes:
        colour (str): a key of :data:`COLOURS`.
        shape (str): one of :data:`SHAPES`.
        box (tuple[int, int, int, int]): ``(x0, y0, x1, y1)`` in pixels, end-exclusive.
        mask (numpy.ndarray): ``(H, W)`` bool, True on the object's pixels.
    """

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def prompt(self) -> str:
        """The single-object caption, e.g. ``"a red circle"``."""
        return prompt(self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """A rendered scene and its ground truth.

    Attributes:
        image (PIL.Image.Image): the RGB image.
        objects (tuple[ShapeObject, ...]): the objects, in caption order.
        caption (str): e.g. ``"a red circle and a blue square"``.
        words (tuple[str, ...]): the caption's words, as a word-level tokenizer splits them.

    Examples::

        >>> scene = shapes.make_scene(7)
        >>> scene.objects[0].colour, scene.objects[0].shape, scene.objects[0].box
        ('green', 'triangle', (37, 38, 62, 63))
        >>> scene.prompts
        ['a green triangle', 'a yellow square', 'a red square']
        >>> scene.array.shape, scene.masks.shape, len(scene.absent_prompts)
        ((64, 64, 3), (3, 64, 64), 21)
    """

    image: Image.Image
    objects: tuple[ShapeObject, ...]
    caption: str
    words: tuple[str, ...]

    @property
    def array(self) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8."""
        return np.asarray(self.image)

    @property
    def masks(self) -> np.ndarray:
        """``(K, H, W)`` bool masks of the K objects, in caption order."""
        return np.stack([o.mask for o in self.objects])

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """``(x0, y0, x1, y1)`` boxes of the objects, in caption order."""
        return [o.box for o in self.objects]

    @property
    def prompts(self) -> list[str]:
        """The single-object captions of the present objects, in caption order."""
        return [o.prompt for o in self.objects]

    @property
    def absent_prompts(self) -> list[str]:
        """Single-object captions of every ``(colour, shape)`` pair that is not in the scene."""
        present = set(self.prompts)
        return [p for p in all_prompts() if p not in present]

    def absent_caption(self, seed: int | np.random.Generator = 0) -> str:
        """The caption with one object replaced by an absent ``(colour, shape)`` pair.

        Args:
            seed (int or numpy.random.Generator, optional): picks the object and its replacement.

        Returns:
            *str*: a caption that names exactly one object which is not in the scene.
        """
        rng = np.random.default_rng(seed)
        pairs = [(o.colour, o.shape) for o in self.objects]
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in pairs]
        pairs[int(rng.integers(len(pairs)))] = absent[int(rng.integers(len(absent)))]
        return caption(pairs)


def prompt(colour: str, shape: str) -> str:
    """``"a {colour} {shape}"``, checking both names.

    Raises:
        ValueError: if ``colour`` is not in :data:`COLOURS` or ``shape`` not in :data:`SHAPES`.
    """
    if colour not in COLOURS:
        raise ValueError(f"`colour` must be one of {list(COLOURS)}; got {colour!r}")
    if shape not in SHAPES:
        raise ValueError(f"`shape` must be one of {list(SHAPES)}; got {shape!r}")
    return f"a {colour} {shape}"


def all_prompts() -> list[str]:
    """The ``len(COLOURS) * len(SHAPES)`` single-object captions, colour-major."""
    return [prompt(c, s) for c in COLOURS for s in SHAPES]


def caption(pairs: Sequence[tuple[str, str]]) -> str:
    """Joins ``(colour, shape)`` pairs: ``"a red circle"``, ``"a red circle and a blue square"``,
    ``"a red circle , a blue square and a green cross"`` (the comma is its own word)."""
    if not pairs:
        raise ValueError("`pairs` must name at least one object")
    names = [prompt(c, s) for c, s in pairs]
    return names[0] if len(names) == 1 else " , ".join(names[:-1]) + " and " + names[-1]


def swapped_caption(scene: Scene, seed: int | np.random.Generator = 0) -> str | None:
    """A binding hard negative: the caption with the colours of two objects swapped.

    Args:
        scene (Scene): a scene with at least two objects.
        seed (int or numpy.random.Generator, optional): picks which two objects.

    Returns:
        *str* naming the same colours and shapes but bound wrongly, or None if no swap changes
        the scene (fewer than two objects, or the objects share a colour or a shape).

    Examples::

        >>> scene = shapes.make_scene(7)
        >>> scene.caption
        'a green triangle , a yellow square and a red square'
        >>> shapes.swapped_caption(scene)
        'a red triangle , a yellow square and a green square'
    """
    rng = np.random.default_rng(seed)
    pairs = [(o.colour, o.shape) for o in scene.objects]
    options = [
        (i, j)
        for i in range(len(pairs))
        for j in range(i + 1, len(pairs))
        if pairs[i][0] != pairs[j][0] and pairs[i][1] != pairs[j][1]
    ]
    if not options:
        return None
    i, j = options[int(rng.integers(len(options)))]
    pairs[i], pairs[j] = (pairs[j][0], pairs[i][1]), (pairs[i][0], pairs[j][1])
    return caption(pairs)


def _shape_mask(shape: str, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Mask of ``shape`` in a ``size`` x ``size`` box, on the box's pixel grid ``yy, xx``."""
    c = (size - 1) / 2
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "triangle":  # apex up, base at the bottom row
        return np.abs(xx - c) <= (yy + 1) / size * size / 2
    arm = max(size // 3, 2)  # cross: a plus sign
    lo = (size - arm) // 2
    return ((yy >= lo) & (yy < lo + arm)) | ((xx >= lo) & (xx < lo + arm))


def _place(
    rng: np.random.Generator, taken: list[tuple[int, int, int, int]], lo: int, hi: int, image_size: int
) -> tuple[int, int, int, int]:
    """A random square box of side in ``lo..hi``, at least 2 pixels away from every box in ``taken``."""
    for attempt in range(400):
        size = int(rng.integers(lo, hi + 1)) if attempt < 200 else lo  # fall back to the smallest size
        x0, y0 = (int(v) for v in rng.integers(1, image_size - size, 2))
        box = (x0, y0, x0 + size, y0 + size)
        if all(box[0] >= b[2] + 2 or b[0] >= box[2] + 2 or box[1] >= b[3] + 2 or b[1] >= box[3] + 2 for b in taken):
            return box
    raise RuntimeError(f"no room for another object in a {image_size}-pixel image")  # pragma: no cover


def render(
    rng: np.random.Generator,
    n_objects: int | None = None,
    image_size: int = IMAGE_SIZE,
    noise: float = 0.02,
) -> tuple[np.ndarray, list[ShapeObject]]:
    """Draws one scene: ``(H, W, 3)`` uint8 image and its objects, in random (caption) order.

    The fast path behind :func:`make_scene`, also used by the training loop.
    """
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"`n_objects` must be in 1..{MAX_OBJECTS}; got {n_objects}")
    if image_size < 32:
        raise ValueError(f"`image_size` must be at least 32; got {image_size}")
    lo, hi = round(0.25 * image_size), round(0.41 * image_size)
    grey = rng.uniform(0.3, 0.55)
    coarse = rng.normal(0.0, 0.06, (4, 4)).astype(np.float32)  # low-frequency blotches
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((image_size, image_size), Image.Resampling.BILINEAR))
    image = grey + smooth[..., None] + rng.normal(0.0, noise, (image_size, image_size, 3))
    pairs = rng.choice(len(COLOURS) * len(SHAPES), size=n_objects, replace=False)
    taken: list[tuple[int, int, int, int]] = []
    objects: list[ShapeObject] = []
    for pair in pairs:
        colour, shape = list(COLOURS)[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)]
        box = _place(rng, taken, lo, hi, image_size)
        x0, y0, x1, _ = box
        size = x1 - x0
        taken.append(box)
        yy, xx = np.mgrid[0:size, 0:size]
        local = _shape_mask(shape, size, yy, xx)
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[y0 : y0 + size, x0 : x0 + size] = local
        tint = np.clip(np.asarray(COLOURS[colour]) + rng.normal(0.0, 0.04, 3), 0.0, 1.0)
        image[mask] = tint + rng.normal(0.0, noise, (int(local.sum()), 3))
        objects.append(ShapeObject(colour, shape, box, mask))
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), objects


def make_scene(
    seed: int | np.random.Generator,
    n_objects: int | None = None,
    image_size: int = IMAGE_SIZE,
    noise: float = 0.02,
) -> Scene:
    """Renders the scene of ``seed``.

    Args:
        seed (int or numpy.random.Generator): the same int always gives the same scene.
        n_objects (int, optional): 1 to 3 objects. Default: uniform over 1..3.
        image_size (int, optional): the side in pixels, at least 32. Default: 64.
        noise (float, optional): standard deviation of the per-pixel noise, in [0, 1] units, on top of
            the background's low-frequency blotches. Default: 0.02.

    Returns:
        *Scene*: the image, the objects with masks and boxes, the caption (objects in random
        order) and its words.

    Examples::

        >>> scene = make_scene(0, n_objects=2)
        >>> len(scene.objects), scene.caption.count(" and ")
        (2, 1)
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.random.Generator):
        raise TypeError(f"`seed` must be an int or a numpy Generator; got {type(seed).__name__}")
    rng = np.random.default_rng(seed)
    array, objects = render(rng, n_objects, image_size, noise)
    text = caption([(o.colour, o.shape) for o in objects])
    return Scene(Image.fromarray(array), tuple(objects), text, tuple(text.split()))


def make_scenes(
    seeds: Sequence[int], n_objects: int | None = None, image_size: int = IMAGE_SIZE, noise: float = 0.02
) -> list[Scene]:
    """:func:`make_scene` for each seed."""
    return [make_scene(int(s), n_objects, image_size, noise) for s in seeds]
