"""Pictures of explanations: maps for Captum's visualizers, one matplotlib figure per image, and an HTML report.

:func:`to_hwc` hands one map to :func:`captum.attr.visualization.visualize_image_attr`. The figures are built on
Captum's visualizers too: the image panels are
:func:`captum.attr.visualization.visualize_image_attr`, the words are coloured with Captum's
colour scale (the one :func:`captum.attr.visualization.visualize_text` uses), and the HTML report
writes the words with :func:`captum.attr.visualization.format_word_importances`.
"""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from captum.attr import LayerAttribution
from captum.attr import visualization as captum_viz
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from captum_gradeclip._compat import _get_color

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from captum_gradeclip.adapters.geometry import Geometry
from captum_gradeclip.adapters.processing import Processing

WordScores = Sequence[tuple[str, float]]


def to_hwc(attr: Tensor, size: tuple[int, int] | None = None, interpolate_mode: str = "bilinear") -> np.ndarray:
    """Prepares one map for :func:`captum.attr.visualization.visualize_image_attr`.

    Args:
        attr (Tensor): one map of shape ``(h, w)``, ``(1, h, w)`` or ``(1, 1, h, w)``.
        size (tuple[int, int], optional): ``(H, W)`` to upsample to, through
            :meth:`captum.attr.LayerAttribution.interpolate`; use the image's size
            for blended heat maps. Default: keep the grid size.
        interpolate_mode (str, optional): mode for upsampling. Default: ``"bilinear"``.

    Returns:
        *numpy.ndarray* of shape ``(H, W, 1)`` (Captum 0.8 requires the channel axis).

    Examples::

        >>> from captum.attr import visualization as viz
        >>> fig, ax = viz.visualize_image_attr(
        ...     to_hwc(maps[0], size=image.shape[:2]), image, "blended_heat_map", use_pyplot=False)
    """
    if not isinstance(attr, Tensor):
        attr = torch.as_tensor(attr)
    single = attr.reshape(attr.shape[-2:]) if attr.dim() >= 2 and attr[..., 0, 0].numel() == 1 else None
    if single is None:
        raise ValueError(f"`attr` must hold exactly one 2-D map; got shape {tuple(attr.shape)}")
    grid = single.detach().float().cpu()[None, None]
    if size is not None:
        grid = LayerAttribution.interpolate(grid, tuple(int(s) for s in size), interpolate_mode)
    return grid[0].permute(1, 2, 0).numpy()


def _processing(processor: Any, argument: str = "processor") -> Processing:
    """The processing role behind ``processor``: a :class:`~captum_gradeclip.loading.Loaded`, a
    :class:`~captum_gradeclip.adapters.processing.Processing`, or a loader's own processor or preprocess."""
    from captum_gradeclip.adapters.processing import BPEProcessing, HFProcessing, hf_like

    if isinstance(processor, Processing):
        return processor
    if isinstance(getattr(processor, "processing", None), Processing):
        return getattr(processor, "processing")  # noqa: B009 - checked above
    if hf_like(processor):
        return HFProcessing(processor)
    if hasattr(processor, "transforms"):  # a torchvision Compose (open_clip, OpenAI clip)
        return BPEProcessing(processor, encode=lambda texts: None)
    raise ValueError(
        f"`{argument}` must be the loader's processor or preprocess, a cg.load(...) result or its processing; "
        f"got {type(processor).__name__}"
    )


def to_original(maps: Tensor, image: object, processor: object, mode: str = "bilinear") -> Tensor:
    """Maps on the model's grid -> the same maps on the user's original image, NaN where the model saw nothing.

    The processor's own geometry is inverted (shortest-side resize and centre crop, a squash to a fixed size,
    padding): a cell's value lands on the part of the original that the cell saw, and the margins that the
    crop cut away are NaN (matplotlib draws NaN as transparent, so the photo shows through).

    Args:
        maps (Tensor): ``(..., h, w)`` maps on the model's grid, such as ``GradECLIP(...).attribute(...)``'s.
        image (PIL.Image, array or Tensor): the original image as the user gave it to the processor
            (only its size is read).
        processor (object): the loader's own processor (transformers), preprocess (open_clip, OpenAI ``clip``),
            a :func:`captum_gradeclip.load` result, or its ``processing``.
        mode (str, optional): ``"bilinear"`` or ``"nearest"``. Default: ``"bilinear"``.

    Returns:
        *Tensor* ``(..., H, W)`` float32, in the original image's coordinates.

    Raises:
        ValueError: for a processor whose geometry cannot be read (the message names it).

    Examples::

        >>> from PIL import Image
        >>> photo = Image.new("RGB", (128, 96))  # landscape: the 64x64 crop drops a margin left and right
        >>> heat = to_original(maps, photo, processor)
        >>> tuple(heat.shape), bool(heat[0, 0, :, 0].isnan().all()), bool(heat[0, 0, :, 64].isnan().any())
        ((1, 1, 96, 128), True, False)
    """
    from captum_gradeclip.adapters.processing import image_size

    return _processing(processor).to_original(maps, image_size(image), mode)


def seen_image(pixel_values: Tensor, processor: object) -> np.ndarray:
    """The image as the model saw it: the processor's output un-normalised, ``(H, W, 3)`` in [0, 1].

    Args:
        pixel_values (Tensor): ``(1, C, H, W)`` or ``(C, H, W)`` pixels from the processor.
        processor (object): as for :func:`to_original`, or a ``(mean, std)`` pair.

    Returns:
        *numpy.ndarray* ``(H, W, C)`` float32: resized and cropped as the model saw it.

    Examples::

        >>> seen_image(pixel_values, processor).shape
        (64, 64, 3)
    """
    from captum_gradeclip.adapters.processing import HFProcessing

    if isinstance(processor, tuple) and len(processor) == 2:  # (mean, std)
        role = HFProcessing(None)
        role.mean, role.std = tuple(processor[0]), tuple(processor[1])
        return role.seen_image(pixel_values)
    return _processing(processor).seen_image(pixel_values)


def _image_array(image: object) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`image` must be a PIL image or an (H, W, 3) array; got {_describe(image)}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def _describe(x: object) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def _maps(image_maps: Any, count: int) -> list[Tensor]:
    if isinstance(image_maps, Tensor | np.ndarray):
        grid = torch.as_tensor(image_maps)
        grid = grid.reshape(-1, *grid.shape[-2:]) if grid.dim() >= 2 else grid
        maps = list(grid) if grid.dim() == 3 else []
    else:
        maps = [torch.as_tensor(m).reshape(torch.as_tensor(m).shape[-2:]) for m in image_maps]
    if len(maps) != count:
        raise ValueError(f"`image_maps` must hold one (h, w) map per text ({count}); got {_describe(image_maps)}")
    return maps


def _word_scores(texts: Sequence[str], token_scores: Any) -> list[list[tuple[str, float]]]:
    if token_scores is None:
        return [[(w, 0.0) for w in t.split()] for t in texts]
    rows = list(token_scores)
    if len(rows) != len(texts):
        raise ValueError(f"`token_scores` must hold one entry per text ({len(texts)}); got {len(rows)}")
    out = []
    for text, row in zip(texts, rows, strict=True):
        items = list(row.tolist() if isinstance(row, Tensor | np.ndarray) else row)
        if all(isinstance(i, tuple | list) and len(i) == 2 for i in items):
            out.append([(str(w), float(s)) for w, s in items])
            continue
        words = text.split()
        if len(items) != len(words):
            raise ValueError(
                "`token_scores` entries must be (word, score) pairs or one score per word of the text; "
                f"got {len(items)} scores for {len(words)} words in {text!r}"
            )
        out.append([(w, float(s)) for w, s in zip(words, items, strict=True)])
    return out


def _normalised(scores: Sequence[float]) -> list[float]:
    top = max((abs(s) for s in scores), default=0.0)
    return [s / top if top > 0 else 0.0 for s in scores]


def _hsl_to_rgb(css: str) -> tuple[float, float, float]:
    h, s, lum = (float(v) for v in re.findall(r"[\d.]+", css))
    s, lum = s / 100, lum / 100
    a = s * min(lum, 1 - lum)

    def f(n: int) -> float:
        k = (n + h / 30) % 12
        return lum - a * max(-1.0, min(k - 3, 9 - k, 1.0))

    return f(0), f(8), f(4)


def _draw_words(fig: Figure, ax: Axes, words: WordScores) -> None:
    """Words left to right, wrapping, each on Captum's importance colour (scaled to the text's maximum)."""
    ax.set_axis_off()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's: explanation_figure attaches one
    box = ax.get_window_extent(renderer)
    x, y = 0.0, 0.9  # a little below the panel: the words' boxes reach above their top
    for (word, _), weight in zip(words, _normalised([s for _, s in words]), strict=True):
        label = ax.text(
            x, y, word, transform=ax.transAxes, va="top", ha="left", fontsize=FONT,
            bbox=dict(boxstyle="round,pad=0.2", facecolor=_hsl_to_rgb(_get_color(weight)), edgecolor="none"),
        )  # fmt: skip
        extent = label.get_window_extent(renderer)
        width = extent.width / box.width + 0.04
        if x > 0 and x + width > 1.02:  # wrap
            x, y = 0.0, y - 1.6 * extent.height / box.height
            label.set_position((x, y))
        x += width


#: The heat maps' matplotlib colour map: perceptually uniform, dark to bright.
CMAP = "inferno"
#: How opaque the heat is where a map reaches its maximum; it fades to transparent where the map is 0, so the
#: image keeps its own colours there.
ALPHA = 0.75
#: Characters per line of a wrapped caption, per column.
WRAP = 26
#: The most panels (the image, then one per text) side by side; more wrap into rows of a grid, so that a figure
#: stays narrow enough to read where it is shown at a page's width (see :data:`READABLE_PX`).
MAX_COLUMNS = 3
#: Inches: a panel's width (with its colour bar) and height (a square image fills it), and the height of its
#: words under it.
PANEL_WIDTH, PANEL_HEIGHT, WORDS_HEIGHT = 2.9, 2.25, 0.7
#: Inches: the lowest panel, for a wide image (its colour bar's label needs the height).
MIN_PANEL_HEIGHT = 1.6
#: Points: the panels' titles and words (:data:`FONT`), their colour bars (:data:`SMALL_FONT`, the smallest text
#: of a figure) and the figure's heading.
FONT, SMALL_FONT, HEADING_FONT = 9, 8, 10
#: Inches per line of a panel's title and of the heading, and per character of the heading (to wrap it).
TITLE_LINE, HEADING_LINE, HEADING_CHAR = 0.15, 0.17, 0.08
#: The width, in CSS pixels, of a documentation page's content column (furo's 46em), and the smallest text
#: height, in CSS pixels, that reads there: a figure scaled down to that width keeps its
#: :data:`SMALL_FONT` at least this high, up to :data:`MAX_COLUMNS` panels wide.
PAGE_PX, READABLE_PX = 740, 9.0


def panel_grid(panels: int) -> tuple[int, int]:
    """``(rows, columns)`` of a figure's ``panels``: at most :data:`MAX_COLUMNS` a row, the rows as full as can
    be (5 panels: 2 rows of 3; 4 panels: 2 of 2, not 3 and 1).

    Examples::

        >>> [panel_grid(n) for n in (1, 2, 3, 4, 5, 7)]
        [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 3)]
    """
    if panels < 1:
        raise ValueError(f"`panels` must be at least 1; got {panels}")
    rows = -(-panels // MAX_COLUMNS)
    return rows, -(-panels // rows)


def _show_image(fig: Figure, axis: Axes, picture: np.ndarray, title: str) -> None:
    """The image alone on ``axis``, drawn by Captum's visualiser."""
    captum_viz.visualize_image_attr(
        np.ones((*picture.shape[:2], 1)),
        picture,
        "original_image",
        plt_fig_axis=(fig, axis),
        use_pyplot=False,
        title=title,
    )


def _overlay(fig: Figure, axis: Axes, picture: np.ndarray, heat: Tensor, title: str, top: float, label: str) -> None:
    """The image in its own colours under the map, which is scaled to ``top`` (0 shows the image alone), with a
    colour bar in the map's own values, labelled ``label``. A map already at the image's size is drawn as it is,
    its NaN (what the model never saw) greyed; a grid is upsampled to the image."""
    if tuple(heat.shape[-2:]) == picture.shape[:2]:
        attr = heat.detach().float().cpu().numpy()
    else:
        attr = to_hwc(heat, size=picture.shape[:2])[..., 0]
    unseen = np.isnan(attr)
    attr = np.clip(np.nan_to_num(attr, nan=0.0), 0, None)
    relative = np.clip(attr / top, 0, 1) if top > 0 else np.zeros_like(attr)
    _show_image(fig, axis, picture, title)
    shown = axis.imshow(
        relative * top, cmap=CMAP, vmin=0.0, vmax=top if top > 0 else 1.0, alpha=ALPHA * relative,
        interpolation="bilinear",
    )  # fmt: skip
    if unseen.any():  # the processor's crop cut these away: grey them
        grey = np.zeros((*unseen.shape, 4), dtype=np.float32)
        grey[unseen] = UNSEEN
        axis.imshow(grey, interpolation="nearest")
    ticks = [0.0, top / 2, top] if top > 0 else [0.0]
    bar = fig.colorbar(shown, ax=axis, fraction=0.046, pad=0.03, ticks=ticks, format="%.2g")
    if bar.solids is not None:  # the colour patches of a colorbar drawn from a mappable, as here
        bar.solids.set_alpha(1.0)
    bar.ax.tick_params(labelsize=SMALL_FONT)
    bar.set_label(label if top > 0 else "map is 0 everywhere", fontsize=SMALL_FONT)


#: The RGBA drawn over the part of the original image that the model never saw.
UNSEEN = (0.5, 0.5, 0.5, 0.7)


#: ``scale`` choices of :func:`explanation_figure`.
SCALES = ("shared", "each")


def _geometry_note(geometry: Geometry) -> str | None:
    """A line on what the processor did to the image, or None when the model saw it as it is."""
    original, resized, size = geometry.original, geometry.resized, geometry.input
    seen = geometry.seen()
    parts = []
    if resized != original or size != original:
        parts.append(f"the model saw this {original[1]}x{original[0]} image as {size[1]}x{size[0]} pixels")
    if not bool(seen.all()):
        parts.append(f"grey: the {100 * (1 - float(seen.float().mean())):.0f}% the processor cut away, unseen")
    return "\n".join(parts) or None


def _warn_if_stretched(image: tuple[int, ...], grid: tuple[int, ...]) -> None:
    """Warns when a map's grid and the image have different shapes (more than 2% apart)."""
    image_ratio, grid_ratio = image[1] / image[0], grid[1] / grid[0]
    if abs(image_ratio / grid_ratio - 1) > 0.02:
        warnings.warn(
            f"the image is {image[1]}x{image[0]} but the maps' grid is {grid[1]}x{grid[0]}: the maps are stretched "
            "over it, and part of it may never have been seen by the model (a centre crop); pass processor= to "
            "place them where the model looked, or draw the image the model saw (cg.seen_image)",
            stacklevel=3,
        )


def explanation_figure(
    image: object,
    texts: Sequence[str],
    image_maps: Tensor | np.ndarray | Sequence[Tensor],
    token_scores: Sequence[WordScores] | Sequence[Sequence[float]] | Tensor | None = None,
    scores: Sequence[float] | Tensor | None = None,
    title: str | None = None,
    score_names: str | Sequence[str] = "score",
    scale: str = "shared",
    explained: str | None = None,
    processor: object = None,
) -> Figure:
    """One figure: the image, then for each text its heat map over the image and its words coloured by importance.

    Every text's map is drawn over the image in the image's own colours: the heat (matplotlib's perceptually
    uniform ``inferno``) is opaque where the map reaches the colour scale's top and fades out where the map is 0.
    By default the maps of the same score (``score_names``) share one colour scale, the largest value of any of
    them, so that a text the image matches weakly gets a faint map rather than noise blown up to full brightness;
    ``scale="each"`` scales each map to its own maximum instead. The colour bars are in the maps' own values, in
    the units of the explained score. The texts' captions are wrapped, not cut.

    The panels (the image, then one per text) sit at most :data:`MAX_COLUMNS` a row, in a grid
    (:func:`panel_grid`), so that a figure shown at a documentation page's width (:data:`PAGE_PX` CSS pixels) or
    in a narrow window keeps its smallest text, the colour bars' ticks, at least :data:`READABLE_PX` pixels high.

    Args:
        image (PIL.Image.Image or numpy.ndarray): the image as the model saw it, ``(H, W, 3)``
            floats in [0, 1] or uint8.
        texts (list[str]): the M texts.
        image_maps (Tensor or list[Tensor]): one map per text, ``(M, h, w)`` or ``(1, M, h, w)``
            as :meth:`GradECLIP.attribute` returns them; upsampled to the image with
            :func:`captum_gradeclip.to_hwc`.
        token_scores (optional): per text, ``(word, score)`` pairs (as :func:`captum_gradeclip.words`
            returns them) or one score per whitespace-separated word. Default: words uncoloured.
        scores (list[float] or Tensor, optional): the M similarity scores, shown in the titles.
        title (str, optional): the figure's title.
        score_names (str or list[str], optional): what the scores are, for the titles, e.g.
            ``"cosine"`` or ``"p"``; one for all texts or one per text. Default: ``"score"``.
        scale (str, optional): ``"shared"`` (one colour scale for the maps of each score name) or ``"each"``
            (each map to its own maximum). Default: ``"shared"``.
        explained (str, optional): which score the maps explain, written under the title, e.g.
            ``"softmax: each text's probability among the 3 texts"``. Default: not written.
        processor (object, optional): the loader's processor (or preprocess, or a :func:`captum_gradeclip.load`
            result). With it, ``image`` is the user's original image, as given to the processor: the maps are
            placed where the model looked (:func:`to_original`), the part the processor cut away is greyed, and
            a note under the figure says how the processor resized or cropped it. Without it, ``image`` must be
            the image as the model saw it (:func:`seen_image`); an image whose shape does not match the maps'
            grid gets a warning, as its maps would be stretched over pixels the model may never have seen.
            Default: None.

    Returns:
        *matplotlib.figure.Figure* (not attached to pyplot; save it with ``fig.savefig``).

    Examples::

        >>> maps = cg.GradECLIP(sim).attribute(pixel_values)  # (1, M, h, w)
        >>> fig = explanation_figure(image, texts, maps[0], scores=sim(pixel_values)[0])
        >>> fig.savefig(tmp_path / "explanation.png")
    """
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("`texts` must be a non-empty list of strings")
    picture = _image_array(image)
    maps = _maps(image_maps, len(texts))
    note = None
    if processor is not None:
        from captum_gradeclip.adapters.processing import image_size

        geometry = _processing(processor).geometry(image_size(image))
        maps = list(geometry.to_original(torch.stack([m.float() for m in maps])))
        note = _geometry_note(geometry)
    elif maps:
        _warn_if_stretched(picture.shape[:2], tuple(maps[0].shape[-2:]))
    words = _word_scores(texts, token_scores)
    values = None
    if scores is not None:
        values = [float(s) for s in (scores.reshape(-1).tolist() if isinstance(scores, Tensor) else scores)]
    if values is not None and len(values) != len(texts):
        raise ValueError(f"`scores` must hold one score per text ({len(texts)}); got {len(values)}")
    names = [score_names] * len(texts) if isinstance(score_names, str) else list(score_names)
    if len(names) != len(texts):
        raise ValueError(f"`score_names` must be one name or one per text ({len(texts)}); got {len(names)}")
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {', '.join(map(repr, SCALES))}; got {scale!r}")
    tops = [float(heat.detach().float().nan_to_num(0.0).clamp(min=0).max()) for heat in maps]
    if scale == "shared":  # one scale per explained score: maps of different scores are in different units
        tops = [max(t for t, n in zip(tops, names, strict=True) if n == name) for name in names]

    captions = [textwrap.fill(text, WRAP) for text in texts]
    titles = ["image"] + [c if values is None else f"{c}\n{names[j]} {values[j]:.3f}" for j, c in enumerate(captions)]
    heading = "\n".join(filter(None, [title, explained and f"the maps explain {explained}", note]))
    rows, columns = panel_grid(len(texts) + 1)
    width = PANEL_WIDTH * columns
    if heading:
        heading = "\n".join(textwrap.fill(line, int(width / HEADING_CHAR)) for line in heading.split("\n"))
    # inches: per row of panels, the room for its titles, the panels and their words; the heading above all
    title_room = [
        TITLE_LINE * max(t.count("\n") + 1 for t in titles[r * columns : (r + 1) * columns]) + 0.1 for r in range(rows)
    ]
    heading_room = HEADING_LINE * (heading.count("\n") + 1) + 0.1 if heading else 0.05
    # a wide image is drawn as wide as a square one, so its panel is lower (but keeps room for its colour bar)
    panel = float(np.clip(PANEL_HEIGHT * picture.shape[0] / picture.shape[1], MIN_PANEL_HEIGHT, PANEL_HEIGHT))
    height = heading_room + sum(title_room) + rows * (panel + WORDS_HEIGHT) + 0.05
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # a renderer to measure the words with, without pyplot
    grid = fig.add_gridspec(
        3 * rows, columns, height_ratios=[h for room in title_room for h in (room, panel, WORDS_HEIGHT)],
        hspace=0.0, wspace=0.35, bottom=0.05 / height, top=1 - heading_room / height, left=0.02,
        right=1 - 0.65 / width,
    )  # fmt: skip
    for k, label in enumerate(titles):  # panel 0: the image; panel j + 1: text j
        row, column = divmod(k, columns)
        axis = fig.add_subplot(grid[3 * row + 1, column])
        if k == 0:
            _show_image(fig, axis, picture, label)
        else:
            j = k - 1
            unit = f"map ({names[j]})" + (", shared scale" if scale == "shared" and names.count(names[j]) > 1 else "")
            _overlay(fig, axis, picture, maps[j], label, tops[j], unit)
            _draw_words(fig, fig.add_subplot(grid[3 * row + 2, column]), words[j])
        axis.title.set_fontsize(FONT)
    if heading:
        fig.suptitle(heading, fontsize=HEADING_FONT, y=1 - 0.08 / height, va="top")
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


@dataclass
class ReportEntry:
    """One section of an HTML report.

    Attributes:
        title (str): the section heading.
        png (bytes or Path): the figure, as PNG bytes or a PNG file.
        texts (list[str]): the explained texts.
        words (list[list[tuple[str, float]]]): per text, word importances.
        scores (list[float]): per text, the similarity score.
        best (int, optional): the text with the highest score, marked in the table; ``None`` (the default)
            marks none, e.g. when the top scores tie.

    Examples::

        >>> fig = explanation_figure(image, texts, GradECLIP(sim).attribute(pixel_values)[0])
        >>> entry = ReportEntry("scene 7", figure_png(fig), texts, [[("a", 0.1)]] * len(texts), [0.3] * len(texts))
        >>> save_html(tmp_path / "report.html", [entry]).exists()
        True
    """

    title: str
    png: bytes | Path
    texts: list[str] = field(default_factory=list)
    words: list[list[tuple[str, float]]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best: int | None = None


def save_html(
    path: str | Path,
    entries: Sequence[ReportEntry],
    title: str = "Grad-ECLIP explanations",
    notes: Sequence[str] = (),
    *,
    method: str = "Grad-ECLIP",
    model: str | None = None,
    summary: Sequence[str] = (),
    scale: str = "shared",
) -> Path:
    """Writes a self-contained HTML report: every figure embedded, and a table of word importances per entry.

    The table gives each text's score and its words twice: coloured by importance (Captum's
    :func:`~captum.attr.visualization.format_word_importances`) and as numbers.

    Args:
        path (str or Path): the HTML file to write (its directory is created).
        entries (list[ReportEntry]): the sections, in order.
        title (str, optional): the page title. Default: ``"Grad-ECLIP explanations"``.
        notes (list[str], optional): warnings shown in a banner at the top of the page (e.g. words the model
            does not know). Default: none.
        method (str, optional): the method that drew the maps, named at the top. Default: ``"Grad-ECLIP"``.
        model (str, optional): the model, named at the top (e.g. its ``--model`` spec). Default: not named.
        summary (list[str], optional): lines shown under the title (e.g. which maps missed). Default: none.
        scale (str, optional): how the figures scale their maps (:func:`explanation_figure`'s ``scale``), as the
            page says. Default: ``"shared"``.

    Returns:
        *Path*: ``path``.

    Examples::

        >>> fig = explanation_figure(image, texts, cg.GradECLIP(sim).attribute(pixel_values)[0])
        >>> words = [[(w, 0.0) for w in text.split()] for text in texts]
        >>> scores = sim(pixel_values)[0].tolist()
        >>> save_html(tmp_path / "index.html", [ReportEntry("scene 7", figure_png(fig), texts, words, scores)]).name
        'index.html'
    """
    if not entries:
        raise ValueError("`entries` must hold at least one ReportEntry")
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {', '.join(map(repr, SCALES))}; got {scale!r}")
    sections = []
    for entry in entries:
        if not isinstance(entry, ReportEntry):
            raise TypeError(f"`entries` must hold ReportEntry objects; got {type(entry).__name__}")
        png = entry.png.read_bytes() if isinstance(entry.png, Path) else entry.png
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"entry {entry.title!r}: `png` is not a PNG image")
        width, height = Image.open(io.BytesIO(png)).size
        rows = []
        for j, text in enumerate(entry.texts):
            words = entry.words[j] if j < len(entry.words) else []
            score = f"{entry.scores[j]:.3f}" if j < len(entry.scores) else ""
            if j == entry.best:
                score = f"<b>{score} (best)</b>"
            importances = captum_viz.format_word_importances(
                [html.escape(w) for w, _ in words], _normalised([s for _, s in words])
            )
            numbers = " ".join(f"{html.escape(w)}&nbsp;{v:.3f}" for w, v in words)
            rows.append(
                f'<tr><td>{html.escape(text)}</td><td>{score}</td>{importances}<td class="numbers">{numbers}</td></tr>'
            )
        table = (
            "<table><tr><th>text</th><th>score</th><th>word importance</th><th>word scores</th></tr>"
            + "".join(rows)
            + "</table>"
            if rows
            else ""
        )
        data = base64.b64encode(png).decode("ascii")
        sections.append(
            f"<section><h2>{html.escape(entry.title)}</h2>"
            f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{html.escape(entry.title)}">{table}</section>'
        )
    legend = " ".join(
        f'<span style="background-color: {_get_color(v)}; padding: 0 6px">{name}</span>'
        for v, name in [(0.0, "neutral"), (0.5, "important"), (1.0, "most important")]
    )
    banner = "".join(f'<div class="note" role="alert"><b>Warning:</b> {html.escape(n)}</div>' for n in notes)
    ran = f"Method: <b>{html.escape(method)}</b>" + (f". Model: <b>{html.escape(model)}</b>" if model else "")
    lines = "".join(f'<p class="summary">{html.escape(line)}</p>' for line in summary)
    scaling = (
        "the maps of one figure that explain the same score share one colour scale, so a weak match looks weak"
        if scale == "shared"
        else "each map is scaled to its own maximum"
    )
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:16px;background:#fff}"
        "img{display:block;margin:8px 0}table{border-collapse:collapse;margin-bottom:24px}"
        "td,th{padding:2px 8px;text-align:left;vertical-align:top}"
        ".numbers{font-family:monospace;font-size:90%}"
        ".note{background:#fff3cd;border:2px solid #d39e00;color:#5c4400;padding:8px 12px;margin:8px 0;"
        "font-size:110%}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="ran">{ran}.</p>{banner}{lines}'
        f"<p>Heat maps: {html.escape(method)}, bright where the image matches the text, transparent where it does "
        f"not; {scaling}; the colour bars give the maps' values. "
        f"Words, scaled to each text's most important word: {legend}; their raw scores in the last column.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
