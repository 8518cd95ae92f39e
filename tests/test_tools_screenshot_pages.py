"""tools/screenshot_pages.py: headless Chromium screenshots a page and finds broken images and horizontal scrollbars."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from captum_gradeclip.viz import ReportEntry, explanation_figure, figure_png, save_html
from tools import screenshot_pages as sp

BROWSER = sp.find_chromium()
needs_chromium = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on the PATH (apt-get install -y chromium; .ci/run installs it)"
)


def _report(folder, texts: int):
    """A report as `explain` writes it: one figure of an image against `texts` texts, and its table."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.7, (64, 64, 3)).astype(np.float32)
    names = [f"a red circle {k}" for k in range(texts)]
    maps = torch.rand(texts, 8, 8, generator=torch.Generator().manual_seed(0))
    words = [[(w, 0.1) for w in n.split()] for n in names]
    png = figure_png(explanation_figure(image, names, maps, words, scores=[0.2] * texts))
    return save_html(folder / "index.html", [ReportEntry("photo", png, names, words, [0.2] * texts)]), png


def _page(folder, name: str, body: str):
    folder = folder / "site"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (300, 120), "red").save(folder / "red.png")
    page = folder / name
    page.write_text(f"<!DOCTYPE html><html><head><title>{name}</title></head><body>{body}</body></html>")
    return page


@needs_chromium
def test_a_report_with_five_texts_loads_its_figure_without_a_horizontal_scrollbar(tmp_path):
    page, png = _report(tmp_path / "report", texts=5)
    check = sp.check_page(BROWSER, page)
    assert check.loaded and check.title == "Grad-ECLIP explanations" and check.images == 1 and not check.broken
    assert check.window_width == 1280 and check.page_width <= 1280, "a 5-text figure fits a 1280 px window"
    assert check.problems == [] and check.scales == [pytest.approx(1.0)], "shown at its own size"
    assert check.height > Image.open(io.BytesIO(png)).size[1], "the page holds the figure and its table"


@needs_chromium
def test_broken_images_and_a_too_wide_page_are_found_and_fail_the_run(tmp_path, capsys):
    good = _page(tmp_path, "good.html", '<p>fine</p><img src="red.png" alt="red" width="150">')
    wide = '<div style="width:2000px;height:1500px">x</div>'
    bad = _page(tmp_path, "bad.html", f'<img src="missing.png" alt="the missing one">{wide}')
    check = sp.check_page(BROWSER, good)
    assert (check.loaded, check.images, check.broken, check.overflows) == (True, 1, [], False)
    assert check.scales == [pytest.approx(0.5)], "shown at 150 of its 300 px"
    check = sp.check_page(BROWSER, bad)
    assert check.broken == ["the missing one"] and check.overflows and check.page_width >= 2000
    assert check.problems == ["broken image: the missing one", f"horizontal scrollbar: page {check.page_width} px "
                              "wide, window 1280 px"]  # fmt: skip
    assert bad.read_text().count("<script") == 0, "the page itself is not changed"

    out = tmp_path / "shots"
    assert sp.main([str(out), "--report", str(good), "--report", str(bad), "--height", "700", "--colours", "16"]) == 1
    printed = capsys.readouterr()
    assert "| report-site-good | yes | 1 | - | 1280 of 1280 | no | 0.50 |" in printed.out
    assert "report-site-bad: broken image: the missing one" in printed.err
    shot = Image.open(out / "report-site-good.png")
    assert shot.mode == "P" and len(shot.getcolors()) <= 16, "--colours: a palette PNG"
    assert shot.size == (1280, 200), "the page's height, at least 200 px"
    pixels = np.asarray(shot.convert("RGB"))
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60)).sum() == 150 * 60, "the red image, at half its size"
    assert Image.open(out / "report-site-bad.png").size == (1280, 700), "cut at --height"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chromium", "no-such-chromium", "--report", "{page}"], "no Chromium: install Debian's `chromium`"),
        (["--report", "{tmp}/x.html"], "--report: no such HTML file"),
        (["--docs", "{tmp}"], "has no index.html"),
        (["--docs", "{tmp}", "--build-docs"], "give --docs (a built folder) or --build-docs, not both"),
        (["--page", "gallery.html", "--report", "{page}"], "--page needs --docs or --build-docs"),
        (["--colours", "300", "--report", "{page}"], "--colours must be 2 to 256; got 300"),
        ([], "nothing to screenshot"),
    ],
)
def test_bad_arguments_are_clear_errors_before_anything_runs(tmp_path, capsys, args, message):
    page = _page(tmp_path, "good.html", "<p>fine</p>")
    argv = [a.format(tmp=tmp_path, page=page) for a in args]
    with pytest.raises(SystemExit) as stopped:
        sp.main([str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing written"


def test_a_missing_page_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="`page`: no such HTML file"):
        sp.check_page("chromium", tmp_path / "nothing.html")
    with pytest.raises(FileNotFoundError, match=r"no page of .* matches 'gallery.html'"):
        sp.docs_pages(tmp_path, ["gallery.html"])
