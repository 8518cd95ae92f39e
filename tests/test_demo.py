"""`captum-gradeclip demo`, the README's first command, run as a subprocess on the embedded ShapesCLIP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captum_gradeclip.cli.demo import DEMO_SCENES
from captum_gradeclip.viz import MAX_COLUMNS, PANEL_WIDTH


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    script = Path(sys.executable).with_name("captum-gradeclip")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "captum_gradeclip"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, "demo", "--out", "report"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    return root / "report", result


def test_demo_writes_a_figure_per_scene_and_the_report(demo):
    out, result = demo
    assert result.returncode == 0, result.stderr
    pngs = sorted(out.glob("scene_*.png"))
    assert len(pngs) == len(DEMO_SCENES)
    widths = [round(columns * PANEL_WIDTH * 100) for columns in (2, MAX_COLUMNS)]
    for png in pngs:  # 3 or 4 texts and the image: 2 x 2 or 2 x 3 panels, at most MAX_COLUMNS wide
        with Image.open(png) as image:
            assert image.format == "PNG" and widths[0] <= image.size[0] <= widths[1]
    page = (out / "index.html").read_text()
    assert page.count("<img") == len(DEMO_SCENES) and page.count("<table>") == len(DEMO_SCENES)
    assert "demo scenes" in result.stderr, "tqdm progress"


def test_demo_maps_sit_on_the_named_objects(demo):
    _, result = demo
    found = re.search(r"maps peaking on the named object: (\d+)/(\d+)", result.stdout)
    assert found, result.stdout
    hits, total = int(found[1]), int(found[2])
    assert total == sum(n for _, n in DEMO_SCENES)
    assert hits / total >= 0.75, result.stdout
    assert result.stdout.count("map peaks on it") == hits


def test_demo_report_names_the_model_the_method_and_the_maps_that_missed(demo):
    out, result = demo
    page = (out / "index.html").read_text()
    assert "Method: <b>Grad-ECLIP (native)</b>. Model: <b>shapes</b>." in page
    found = re.search(r"maps peaking on the named object: (\d+)/(\d+)", result.stdout)
    assert f"Maps peaking on their object: {found[1]} of {found[2]}." in page
    missed = re.findall(r"'([^']+)'  map peaks elsewhere", result.stdout)
    assert len(missed) == int(found[2]) - int(found[1])
    for text in missed:  # each miss is named, with its scene
        assert re.search(rf"scene \d: &#x27;{re.escape(text)}&#x27;", page), text
    assert "The maps explain p, each object" in page and "share one colour scale" in page


def test_bad_demo_option_is_one_line_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "captum_gradeclip", "demo", "--bogus"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unrecognized arguments: --bogus" in result.stderr and "Traceback" not in result.stderr
