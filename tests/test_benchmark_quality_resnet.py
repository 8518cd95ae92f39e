"""benchmarks/quality.py on the ResNet ShapesCLIP (`--model shapes:resnet`): methods that do not apply are n/a with
their reason, and each model's results are one section of the page, kept when another model's run rewrites it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")

QUALITY = Path(__file__).parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def module():
    return runpy.run_path(str(QUALITY))


def test_resnet_run_marks_rollout_and_game_on_the_attention_pool_not_applicable(module, tmp_path):
    out = tmp_path / "quality.md"
    out.write_text(
        "# Explanation quality benchmark\n\nAn old intro.\n\n<!-- quality.py: shapes -->\n## Model: `--model shapes`\n"
        "\nModel and data: the ViT.\n\n### Score: cosine\n\n| method | deletion AUC ↓ |\n|---|---|\n"
        "| Grad-ECLIP (native) | 0.132 |\n<!-- /quality.py: shapes -->\n"
    )  # the ViT's section, written by an earlier run
    argv = ["--model", "shapes:resnet", "--scenes", "4", "--steps", "2", "--rise-masks", "2", "--m2ib-steps", "1",
            "--methods", "Grad-ECLIP (native)", "Rollout", "GAME", "captum:LayerGradCam", "--out", str(out),
    ]  # fmt: skip
    module["main"](argv)
    text = out.read_text()
    assert text.startswith("# Explanation quality benchmark") and text.count("# Explanation quality") == 1
    assert "An old intro." not in text and "One section per model" in text
    vit, resnet = text.index("<!-- quality.py: shapes -->"), text.index("<!-- quality.py: shapes:resnet -->")
    assert vit < resnet and "| Grad-ECLIP (native) | 0.132 |" in text[vit:resnet], "the ViT section is kept"
    assert "### Score: cosine" in text[vit:resnet]
    section = text[resnet:]
    assert "ModifiedResNet" in section and "--model shapes:resnet --scenes 4" in section
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["Rollout"].split("|")[2].strip() == "n/a" and rows["GAME"].split("|")[2].strip() == "n/a"
    assert rows["Rollout"].split("|")[6].strip() != "n/a", "rollout runs on the (transformer) text tower"
    assert "- Rollout (image side): Rollout needs token-to-token self-attention blocks" in section
    assert "- captum:LayerGradCam (image side): captum:LayerGradCam explains the patch embedding" in section
    assert rows["captum:LayerGradCam"].split("|")[2].strip() == "n/a"
    cells = [c.strip("* ") for c in rows["Grad-ECLIP (native)"].split("|")[2:10]]
    assert all(c != "n/a" for c in cells) and 0 <= float(cells[2]) <= 1, cells  # every column, pointing in [0, 1]

    module["main"]([*argv[:-2], "--out", str(out)])  # a rerun replaces its own section only
    again = out.read_text()
    assert again.count("<!-- quality.py: shapes:resnet -->") == 1 and again.count("<!-- quality.py: shapes -->") == 1
