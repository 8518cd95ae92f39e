"""Numbers copied by hand into the docs agree with their source: the models' training.json and the generated pages.

A number agrees when it is its source rounded to the digits it shows. When a model is retrained or a benchmark
page regenerated, this test names each sentence that still holds the old number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ZOO = ROOT / "captum_gradeclip" / "zoo"
NUMBER = r"(\d+(?:\.\d+)?)"


def _training(backbone: str) -> dict:
    from captum_gradeclip.zoo import BACKBONES

    return json.loads((ZOO / BACKBONES[backbone] / "training.json").read_text())


def _text(path: str) -> str:
    """The page with every run of whitespace (line breaks, indentation) as one space."""
    return " ".join((ROOT / path).read_text().split())


def agrees(shown: str, value: float) -> bool:
    """Whether ``shown`` (e.g. ``"0.98"``) is ``value`` rounded to the digits it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10**-decimals + 1e-9


def _numbers(text: str, pattern: str, where: str) -> list[str]:
    match = re.search(pattern.replace("#", NUMBER), text)
    assert match is not None, f"{where} no longer says {pattern!r}: update this test with the new wording"
    return list(match.groups())


def _check(text: str, pattern: str, values: list[float], where: str) -> None:
    shown = _numbers(text, pattern, where)
    assert all(agrees(s, v) for s, v in zip(shown, values, strict=True)), (where, pattern, shown, values)


def test_agrees_rounds_to_the_digits_shown():
    assert agrees("0.98", 0.98333) and agrees("0.983", 0.98333) and agrees("0.02", 0.0175) and agrees("12.2", 12.17)
    assert not agrees("0.98", 0.9749) and not agrees("0.983", 0.9824) and not agrees("9.3", 9.36)


#: The rows of the quality tables of docs/shapes_clip.md and the training.json keys they show.
ROWS = {
    "single-object zero-shot top-1 over all 24 prompts": ["zero_shot_top1"],
    "2-object image-to-text recall@5 among 100 captions": ["pair_recall_at_5"],
    "2-object scenes whose two best prompts are both present objects": ["pair_top2_both_present"],
    'Grad-ECLIP pointing game, prompt probability (`score="softmax"`): named / other / background': [
        "softmax_pointing_named",
        "softmax_pointing_other",
        "softmax_pointing_background",
    ],
    "the same, argmax *cell* of the map overlaps the named object (`softmax_pointing_named_cell`)": [
        "softmax_pointing_named_cell"
    ],
    "Grad-ECLIP pointing game, prompt cosine: named / other / background": [
        "pointing_named",
        "pointing_other",
        "pointing_background",
    ],
}


def _tables(path: Path) -> list[dict[str, list[str]]]:
    """Each markdown table of the page as ``{first cell: the other cells}``."""
    tables, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = {}
                tables.append(current)
            current[cells[0]] = cells[1:]
        else:
            current = None
    return tables


def test_shapes_clip_quality_tables_show_training_json():
    vit, resnet, deep = (_training(b)["quality"] for b in ("vit", "resnet", "vit-deep"))
    tables = [t for t in _tables(ROOT / "docs" / "shapes_clip.md") if set(ROWS) & set(t)]
    assert len(tables) == 3, "docs/shapes_clip.md: the ViT table, ResNet beside ViT, and Deep beside ViT"
    checked = 0
    for table, columns in zip(tables, [[vit], [resnet, vit], [deep, vit]], strict=True):
        for row, keys in ROWS.items():
            if row not in table:
                continue
            for cell, quality in zip(table[row], columns, strict=False):
                if any(k not in quality for k in keys):
                    assert cell == "not measured", (row, cell)
                    continue
                shown = cell.split(" / ")
                assert len(shown) == len(keys), (row, cell)
                assert all(agrees(s, quality[k]) for s, k in zip(shown, keys, strict=True)), (row, cell)
                checked += len(keys)
    assert checked == 9 + 10 + 9 + 9 + 9


def test_shapes_clip_and_readme_training_facts_show_training_json():
    vit, resnet = _training("vit"), _training("resnet")
    page, readme = _text("docs/shapes_clip.md"), _text("README.md")
    where = "docs/shapes_clip.md"
    _check(page, r"Training took # minutes", [vit["train_minutes"]], where)
    _check(page, r"\(`train_cpu_minutes`: #\)", [vit["train_cpu_minutes"]], where)
    _check(page, r"as the ViT, # steps of batch #", [resnet["config"]["steps"], resnet["config"]["batch_size"]], where)
    _check(page, r"It took # minutes with one thread", [resnet["train_minutes"]], where)
    loads = resnet["load_average_before_and_after"]
    _check(
        page,
        r"\(`train_cpu_minutes`: #; load average # before, # after\), final loss #",
        [resnet["train_cpu_minutes"], *loads, resnet["final_loss"]],
        where,
    )
    deep = _training("vit-deep")
    steps = [deep["config"]["steps"], deep["config"]["batch_size"]]
    _check(page, r"# steps of batch # \(200-step warm-up\)", steps, where)
    _check(
        page,
        r"It took # minutes on the 2-core machine with # threads \(# CPU minutes; other jobs shared the cores "
        r"for part of the run\), final loss #",
        [deep["train_minutes"], deep["threads"], deep["train_cpu_minutes"], deep["final_loss"]],
        where,
    )
    _check(readme, r"`train_shapes --backbone vit-deep` in # minutes", [deep["train_minutes"]], "README.md")
    quality = deep["quality"]
    _check(
        readme,
        r"zero-shot top-1 #, recall@5 #, top-2 binding # \(\[docs/shapes_clip",
        [quality["zero_shot_top1"], quality["pair_recall_at_5"], quality["pair_top2_both_present"]],
        "README.md",
    )
    _check(readme, r"It took # minutes on 2 CPU cores", [vit["train_minutes"]], "README.md")
    _check(
        readme, r"\(# steps, # minutes on one thread", [resnet["config"]["steps"], resnet["train_minutes"]], "README.md"
    )


def test_readme_quality_sentences_show_training_json():
    vit, resnet = _training("vit")["quality"], _training("resnet")["quality"]
    readme = _text("README.md")
    for pattern, values in [
        (r"top-1 over all 24 prompts # \(floor", [vit["zero_shot_top1"]]),
        (r"recall@5 among 100 captions # \(floor", [vit["pair_recall_at_5"]]),
        (r"ranked top-2 on # of 2-object scenes", [vit["pair_top2_both_present"]]),
        (
            r'\(`score="softmax"`\), # on the named object, # on the other, # on the background',
            [vit["softmax_pointing_named"], vit["softmax_pointing_other"], vit["softmax_pointing_background"]],
        ),
        (
            r"cosine, only # / # / #",
            [vit["pointing_named"], vit["pointing_other"], vit["pointing_background"]],
        ),
        (
            r"zero-shot top-1 #, recall@5 #, top-2 binding #; softmax pointing game # named / # other / # background",
            [
                resnet["zero_shot_top1"],
                resnet["pair_recall_at_5"],
                resnet["pair_top2_both_present"],
                resnet["softmax_pointing_named"],
                resnet["softmax_pointing_other"],
                resnet["softmax_pointing_background"],
            ],
        ),
        (r"highest 4x4 cell overlaps the named object in # of the cases", [resnet["softmax_pointing_named_cell"]]),
        (
            r"cosine pointing # / # / #",
            [resnet["pointing_named"], resnet["pointing_other"], resnet["pointing_background"]],
        ),
    ]:
        _check(readme, pattern, values, "README.md")


def _text_order(score: str) -> dict[str, dict[str, dict[str, float]]]:
    """docs/text_order.md's tables for ``score``: ``{model: {method: {column: value}}}``."""
    page = (ROOT / "docs" / "text_order.md").read_text()
    out = {}
    for model, body in re.findall(r"<!-- text_order\.py: (.+?) -->\n(.*?)<!-- /text_order\.py: \1 -->", page, re.S):
        section = re.search(rf"### Score: {score}\n(.*?)(?=\n### |\Z)", body, re.S)
        assert section is not None, (model, score)
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.group(1).splitlines()]
        rows = [r for r in rows if len(r) > 1 and not set(r[1]) <= set("-:")]
        header, *body_rows = rows
        out[model] = {r[0]: {h: float(v) for h, v in zip(header[1:], r[1:], strict=True)} for r in body_rows}
    return out


def test_metrics_page_text_insertion_claims_follow_the_text_order_page():
    tables = _text_order("softmax")
    assert set(tables) == {"shapes", "shapes:resnet"}
    text = _text("docs/metrics.md")
    top_half = "content words in the top half"
    grad = [t["Grad-ECLIP (native)"] for t in tables.values()]
    rollout = [t["Rollout"] for t in tables.values()]
    shown = _numbers(text, r"fit there \(#% to #%\), against #% to #% for rollout", "docs/metrics.md")
    ranges = [sorted(100 * r[top_half] for r in grad), sorted(100 * r[top_half] for r in rollout)]
    expected = [ranges[0][0], ranges[0][-1], ranges[1][0], ranges[1][-1]]
    assert all(agrees(s, v) for s, v in zip(shown, expected, strict=True)), (shown, expected)
    # "about half of the colour and shape words a score of 0 or less ... as often as it does 'a', 'and' and ','"
    assert all(0.4 <= r["content words scored <= 0"] <= 0.6 for r in grad)
    assert all(abs(r["content words scored <= 0"] - r["function words scored <= 0"]) <= 0.1 for r in grad)
    # "its text insertion AUC trails rollout's on both backbones. Without the ReLU, the AUC is lower still."
    assert "trails rollout's on both backbones" in text and "Without the ReLU, the AUC is lower still" in text
    for table in tables.values():
        native, bare = table["Grad-ECLIP (native)"]["insertion AUC"], table["Grad-ECLIP (native, no ReLU)"]
        assert bare["insertion AUC"] < native < table["Rollout"]["insertion AUC"]


@pytest.mark.parametrize("shown", ["0.3", "0.21"])
def test_a_changed_number_is_caught(shown):
    # the check itself: a sentence that no longer shows its source fails
    with pytest.raises(AssertionError):
        _check(f"final loss {shown}", r"final loss #", [0.2263], "a page")
