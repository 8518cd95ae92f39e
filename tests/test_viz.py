"""Figures and the HTML report: Captum's visualizers underneath, the heat where the map is, a page that shows them."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from captum_gradeclip._compat import _get_color
from captum_gradeclip.viz import (
    MAX_COLUMNS,
    PAGE_PX,
    READABLE_PX,
    ReportEntry,
    _hsl_to_rgb,
    explanation_figure,
    figure_png,
    panel_grid,
    save_html,
)
from tools import screenshot_pages

SIZE = 64


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(0.5 + 0.05 * rng.standard_normal((SIZE, SIZE, 3)), 0, 1).astype(np.float32)


def _hot_corner_map() -> torch.Tensor:
    grid = torch.zeros(8, 8)
    grid[:3, :3] = 1.0  # hot top-left, cold elsewhere
    return grid


def _render(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255


def _axis_pixels(fig: Figure, pixels: np.ndarray, axis) -> np.ndarray:
    x0, y0, x1, y1 = axis.get_window_extent().extents
    height = pixels.shape[0]
    return pixels[int(height - y1) + 2 : int(height - y0) - 2, int(x0) + 2 : int(x1) - 2]


def _colourful_image() -> np.ndarray:
    picture = _image()
    picture[:, : SIZE // 2] = (0.1, 0.7, 0.2)  # green left half, grey right half
    return picture


def test_figure_has_the_image_and_one_heat_map_per_text_hot_where_the_map_is():
    maps = torch.stack([_hot_corner_map(), _hot_corner_map().flip(0, 1)])  # second text: bottom-right
    picture = _colourful_image()
    fig = explanation_figure(
        picture, ["a red circle", "a blue square"], maps, [[("red", 1.0), ("circle", 0.2)], [0.0, 0.5, 1.0]],
        scores=[0.31, 0.12], title="scene",
    )  # fmt: skip
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(panels) == 3, "the image, then one overlay per text"
    titles = [ax.get_title() for ax in panels]
    assert titles[0] == "image" and "a red circle" in titles[1] and "score 0.310" in titles[1]
    pixels = _render(fig)
    for axis, hot_first in [(panels[1], True), (panels[2], False)]:
        panel = _axis_pixels(fig, pixels, axis)
        h, w = panel.shape[:2]
        top_left, bottom_right = panel[: h // 5, : w // 5], panel[-h // 5 :, -w // 5 :]
        hot, cold = (top_left, bottom_right) if hot_first else (bottom_right, top_left)
        cold_truth = picture[-SIZE // 5 :, -SIZE // 5 :] if hot_first else picture[: SIZE // 5, : SIZE // 5]
        # where the map is 0 the image keeps its own colours (green or grey), not a colour map's blue or grey
        assert np.abs(cold.mean((0, 1)) - cold_truth.mean((0, 1))).max() < 0.06, (cold.mean((0, 1)), cold_truth)
        # where it is high, the heat (bright inferno: red and yellow over blue) covers it
        assert hot[..., 0].mean() > cold[..., 0].mean() + 0.2 and hot[..., 0].mean() > hot[..., 2].mean() + 0.2
    fig.clear()


def _bars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_ylabel().startswith("map") and not ax.get_title()]


def _heat_alpha(fig: Figure) -> list[float]:
    """Per overlay, the opacity of its heat where it is hottest."""
    return [float(np.max(ax.images[-1].get_alpha())) for ax in fig.axes if len(ax.images) > 1]


def test_maps_of_one_figure_share_one_colour_scale_in_the_maps_own_values():
    maps = torch.stack([_hot_corner_map() * 0.5, _hot_corner_map() * 0.002])
    fig = explanation_figure(_image(), ["a red circle", "a blue square"], maps, score_names="p")
    bars = _bars(fig)
    assert [ax.get_ylabel() for ax in bars] == ["map (p), shared scale"] * 2
    assert all(ax.get_ylim() == pytest.approx((0.0, 0.5)) for ax in bars), "one scale: the largest map's maximum"
    strong, weak = _heat_alpha(fig)
    assert strong == pytest.approx(0.75) and weak == pytest.approx(0.75 * 0.002 / 0.5), "a weak map looks weak"
    zero = explanation_figure(_image(), ["x"], torch.zeros(1, 8, 8))
    assert any(ax.get_ylabel() == "map is 0 everywhere" for ax in zero.axes)


def test_maps_of_different_scores_do_not_share_a_scale():
    maps = torch.stack([_hot_corner_map() * 0.5, _hot_corner_map() * 0.1, _hot_corner_map() * 0.002])
    fig = explanation_figure(_image(), ["a", "b", "c"], maps, score_names=["p", "p", "cosine"])
    bars = _bars(fig)
    assert [ax.get_ylabel() for ax in bars] == ["map (p), shared scale"] * 2 + ["map (cosine)"]
    assert [ax.get_ylim() for ax in bars] == [pytest.approx((0.0, 0.5))] * 2 + [pytest.approx((0.0, 0.002))]


def test_scale_each_scales_every_map_to_its_own_maximum():
    maps = torch.stack([_hot_corner_map() * 0.5, _hot_corner_map() * 0.002])
    fig = explanation_figure(_image(), ["a red circle", "a blue square"], maps, scale="each")
    bars = _bars(fig)
    assert [ax.get_ylabel() for ax in bars] == ["map (score)"] * 2
    assert [ax.get_ylim() for ax in bars] == [pytest.approx((0.0, 0.5)), pytest.approx((0.0, 0.002))]
    assert _heat_alpha(fig) == [pytest.approx(0.75)] * 2
    with pytest.raises(ValueError, match="`scale` must be one of 'shared', 'each'; got 'global'"):
        explanation_figure(_image(), ["x"], maps[:1], scale="global")


def test_the_figure_says_which_score_the_maps_explain():
    fig = explanation_figure(_image(), ["x"], _hot_corner_map()[None], title="scene", explained="the softmax p")
    assert fig._suptitle.get_text() == "scene\nthe maps explain the softmax p"


def test_long_captions_are_wrapped_not_cut():
    text = "a red circle next to a blue square below a green triangle on a grey background"
    fig = explanation_figure(_image(), [text], _hot_corner_map()[None], scores=[0.5])
    title = next(ax.get_title() for ax in fig.axes if ax.get_title() not in ("", "image"))
    assert title.replace("\n", " ").startswith(text) and title.count("\n") >= 3
    assert max(len(line) for line in title.splitlines()) <= 26


def test_words_are_coloured_with_captums_scale_relative_to_the_top_word():
    fig = explanation_figure(
        _image(), ["a red circle"], _hot_corner_map()[None], [[("a", 0.0), ("red", 2.0), ("circle", 1.0)]]
    )
    labels = {t.get_text(): t for ax in fig.axes for t in ax.texts}
    assert set(labels) == {"a", "red", "circle"}
    colour = {w: labels[w].get_bbox_patch().get_facecolor()[:3] for w in labels}
    assert np.allclose(colour["red"], _hsl_to_rgb(_get_color(1.0)), atol=1e-6)
    assert np.allclose(colour["circle"], _hsl_to_rgb(_get_color(0.5)), atol=1e-6)
    assert np.allclose(colour["a"], (1.0, 1.0, 1.0), atol=1e-6), "zero importance is white"
    positions = [labels[w].get_position()[0] for w in ("a", "red", "circle")]
    assert positions == sorted(positions), "words read left to right"


def test_hsl_conversion_matches_known_colours():
    assert np.allclose(_hsl_to_rgb("hsl(120, 75%, 50%)"), (0.125, 0.875, 0.125))
    assert np.allclose(_hsl_to_rgb("hsl(0, 75%, 100%)"), (1.0, 1.0, 1.0))


def test_figure_accepts_pil_uint8_batched_maps_and_all_zero_maps():
    image = Image.fromarray((_image() * 255).astype(np.uint8))
    fig = explanation_figure(image, ["x", "y"], torch.zeros(1, 2, 8, 8), None, scores=torch.tensor([[0.25, 0.5]]))
    assert len([ax for ax in fig.axes if ax.images]) == 3
    assert [ax.get_title() for ax in fig.axes if ax.images][1:] == ["x\nscore 0.250", "y\nscore 0.500"]
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(texts=[]), "`texts` must be a non-empty list"),
        (dict(texts="a red circle"), "`texts` must be a non-empty list"),
        (dict(image_maps=torch.zeros(3, 8, 8)), r"`image_maps` must hold one \(h, w\) map per text \(2\)"),
        (dict(image=np.zeros((8, 8))), r"`image` must be a PIL image or an \(H, W, 3\) array"),
        (dict(token_scores=[[1.0]]), "`token_scores` must hold one entry per text"),
        (dict(token_scores=[[1.0], [1.0, 2.0]]), "got 1 scores for 3 words"),
        (dict(scores=[0.1]), "`scores` must hold one score per text"),
    ],
)
def test_figure_bad_input(kwargs, match):
    args = dict(image=_image(), texts=["a red circle", "a blue square"], image_maps=torch.zeros(2, 8, 8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        explanation_figure(**args)


def _report(tmp_path, count: int = 2):
    entries = []
    for k in range(count):
        maps = _hot_corner_map()[None] if k % 2 == 0 else _hot_corner_map().flip(0, 1)[None]
        words = [("a", 0.1), ("red", 1.0), ("circle", 0.4)]
        fig = explanation_figure(_image(), ["a red circle"], maps, [words], scores=[0.3])
        entries.append(ReportEntry(f"scene {k}", figure_png(fig), ["a red circle"], [words], [0.3]))
    return save_html(tmp_path / "report" / "index.html", entries, title="test <report>"), entries


def test_html_embeds_every_figure_and_captums_word_importances(tmp_path):
    path, entries = _report(tmp_path)
    page = path.read_text()
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(s) for s in sources] == [e.png for e in entries]
    assert "test &lt;report&gt;" in page, "titles are escaped"
    assert page.count(f'<mark style="background-color: {_get_color(1.0)}') == 2, "top word of each table"
    assert page.count("<mark") == 6
    assert page.count("red&nbsp;1.000") == 2 and "circle&nbsp;0.400" in page, "word scores as numbers"
    assert 'class="note"' not in page, "no banner without notes"


def test_html_banner_shows_the_notes_and_the_best_text_is_marked(tmp_path):
    words = [("a", 0.1), ("red", 1.0)]
    fig = explanation_figure(_image(), ["a red", "a blue"], torch.stack([_hot_corner_map()] * 2), [words, words])
    entry = ReportEntry("scene", figure_png(fig), ["a red", "a blue"], [words, words], [0.3, 0.2], best=0)
    page = save_html(tmp_path / "index.html", [entry], notes=["ShapesCLIP does not know the words 'dragon' <x>"])
    banner = re.search(r'<div class="note" role="alert">(.*?)</div>', page.read_text())
    assert banner and "does not know the words &#x27;dragon&#x27; &lt;x&gt;" in banner[1]
    assert page.read_text().count("(best)") == 1


def test_html_bad_input(tmp_path):
    with pytest.raises(ValueError, match="`entries` must hold at least one"):
        save_html(tmp_path / "x.html", [])
    with pytest.raises(ValueError, match="`png` is not a PNG image"):
        save_html(tmp_path / "x.html", [ReportEntry("a", b"GIF89a")])
    with pytest.raises(TypeError, match="`entries` must hold ReportEntry objects"):
        save_html(tmp_path / "x.html", ["a.png"])  # type: ignore[list-item]


def _find(screen: np.ndarray, figure: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner where ``figure`` appears in ``screen`` (up to small colour differences), else None."""
    screen, figure = screen.astype(int), figure.astype(int)
    r0 = figure.shape[0] // 2
    c0 = int(np.argmax(np.abs(figure[r0] - 255).max(-1) > 30))  # first non-white pixel of the middle row
    probe = figure[r0, c0 : c0 + 4]
    hits = np.ones(screen[:, : screen.shape[1] - 3].shape[:2], dtype=bool)
    for k in range(4):
        hits &= np.abs(screen[:, k : screen.shape[1] - 3 + k] - probe[k]).max(-1) <= 3
    for y, x in zip(*np.nonzero(hits), strict=True):
        top, left = int(y) - r0, int(x) - c0
        window = screen[top : top + figure.shape[0], left : left + figure.shape[1]]
        if top >= 0 and left >= 0 and window.shape == figure.shape and np.abs(window - figure).mean() < 2.0:
            return top, left
    return None


def test_chromium_shows_the_figures_of_the_report(tmp_path):
    browser = screenshot_pages.find_chromium()
    assert browser, "Debian chromium is required (apt-get install -y chromium; .ci/run installs it)"
    path, entries = _report(tmp_path)
    shot = screenshot_pages.screenshot(browser, path, tmp_path / "shot.png", width=1000, height=1400)
    screen = np.asarray(Image.open(shot).convert("RGB"))
    assert (screen < 250).any(axis=-1).mean() > 0.1, "the page is not blank"
    corners = []
    for entry in entries:
        figure = np.asarray(Image.open(io.BytesIO(entry.png)).convert("RGB"))
        corner = _find(screen, figure)
        assert corner is not None, "each figure is displayed, pixel for pixel"
        y, x = corner
        region = screen[y : y + figure.shape[0], x : x + figure.shape[1]]
        assert region.std() > 20, "non-blank where the image is"
        corners.append(corner)
    assert corners[1][0] > corners[0][0], "the figures are shown in order, one below the other"


def _photo_16_9() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.uniform(0.3, 0.7, (54, 96, 3)) * 255).astype(np.uint8))  # W 96 x H 54


def test_with_the_processor_the_maps_sit_where_the_model_looked_and_the_cut_margins_are_grey():
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    photo = _photo_16_9()
    cell = torch.zeros(1, 4, 4)
    cell[0, 0, 0] = 1.0  # the top-left cell of the model's 32x32 centre crop
    fig = explanation_figure(photo, ["x"], cell, processor=processor)
    overlay = next(ax for ax in fig.axes if len(ax.images) == 3)  # the photo, the heat, the grey
    heat, grey = overlay.images[1].get_array(), overlay.images[2].get_array()
    assert heat.shape == grey.shape[:2] == (54, 96), "drawn on the whole original photo"
    unseen = grey[..., 3] > 0
    crop = 32 * 54 / 32  # the crop is 32 of the resized 57x32 image: 54 original pixels wide, centred
    left = (96 - crop) / 2
    assert unseen[:, : int(left) - 1].all() and unseen[:, int(left + crop) + 1 :].all(), "left and right margins"
    assert not unseen[:, int(left) + 1 : int(left + crop) - 1].any() and not unseen[:, 48].any()
    y, x = np.unravel_index(np.argmax(np.ma.filled(heat, 0)), heat.shape)
    assert y < 54 / 4 and left <= x < left + crop / 4, (y, x, left)  # in the crop's top-left cell, not at x = 0
    assert "the model saw this 96x54 image as 32x32 pixels" in fig._suptitle.get_text()
    assert "grey: the 44% the processor cut away, unseen" in fig._suptitle.get_text()


def test_a_photo_whose_shape_differs_from_the_grid_warns_without_the_processor():
    with pytest.warns(UserWarning, match=r"the image is 96x54 but the maps' grid is 4x4: the maps are stretched"):
        explanation_figure(_photo_16_9(), ["x"], torch.zeros(1, 4, 4))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explanation_figure(_image(), ["x"], torch.zeros(1, 4, 4))  # square on square: drawn as it is


def _smallest_text_px(fig: Figure, dpi: int = 100) -> float:
    """The height, in CSS pixels, of the figure's smallest text where its PNG (``figure_png``, ``dpi``) is shown at
    a docs page's width: scaled down to :data:`PAGE_PX` when wider, never up (furo's ``max-width: 100%``)."""
    fig.canvas.draw()  # the colour bars' tick labels exist once drawn
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    width_px = fig.get_figwidth() * dpi
    shown = min(width_px, PAGE_PX) / width_px  # page pixels per figure pixel
    return min(t.get_fontsize() for t in texts) * dpi / 72 * shown


@pytest.mark.parametrize("panels", range(1, 9))
def test_the_smallest_text_reads_at_a_docs_pages_width(panels):
    texts = [f"a red circle number {k}" for k in range(panels)]
    maps = torch.stack([_hot_corner_map() * (k + 1) for k in range(panels)])
    fig = explanation_figure(_image(), texts, maps, scores=[0.1] * panels, title="scene", explained="the p")
    assert _smallest_text_px(fig) >= READABLE_PX, (panels, fig.get_size_inches())
    overlays = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(overlays) == panels + 1 and len(_bars(fig)) == panels, "every text still has its panel and bar"
    rows, columns = panel_grid(panels + 1)
    assert columns <= MAX_COLUMNS and rows * columns >= panels + 1 > (rows - 1) * columns
    specs = [ax.get_subplotspec().get_topmost_subplotspec() for ax in overlays]  # under a colour bar's split
    cells = [(spec.rowspan.start // 3, spec.colspan.start) for spec in specs]
    assert cells == [divmod(k, columns) for k in range(panels + 1)], "row by row: the image, then the texts in order"
    assert [ax.get_title().split("\n")[0] for ax in overlays] == ["image", *texts]
    words = [ax for ax in fig.axes if ax.texts and not ax.images]
    for overlay, below in zip(overlays[1:], words, strict=True):
        assert below.get_position().y1 <= overlay.get_position().y0 + 1e-6, "each text's words under its map"


def test_panel_grid_fills_rows_of_at_most_three_and_refuses_no_panels():
    assert [panel_grid(n) for n in range(1, 10)] == [
        (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3), (3, 3), (3, 3), (3, 3)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="`panels` must be at least 1; got 0"):
        panel_grid(0)
