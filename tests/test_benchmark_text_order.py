"""benchmarks/text_order.py: what each method's text-insertion order is made of."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from captum_gradeclip.metrics import PerturbationCurve

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "text_order.py"


@pytest.fixture(scope="module")
def module():
    return runpy.run_path(str(SCRIPT))


def test_measure_on_a_hand_made_ranking(module):
    # <sos> a red circle and a blue square <eos>: 0 = colour, 1 = shape, 2 = other
    kinds = torch.tensor([[2, 2, 0, 1, 2, 2, 0, 1, 2]])
    words = torch.tensor([[False, True, True, True, True, True, True, True, False]])
    scores = torch.tensor([[9.0, 0.5, 0.0, 3.0, 2.0, -1.0, 0.0, 1.0, 9.0]])  # SOS and EOS are not words
    curve = PerturbationCurve(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([[0.1, 0.4, 0.9]]), torch.tensor([0.45]))
    row = module["measure"](scores, words, kinds, curve)
    assert row["content_nonpositive"] == 0.5  # red and blue
    assert row["function_nonpositive"] == pytest.approx(1 / 3)  # the second "a"
    # 7 words: the top 4 are circle, and, square, a; 2 of the 4 content words that could fit
    assert row["content_in_top_half"] == 0.5
    assert row["top_is_shape"] == 1.0
    assert row["insertion_at_half"] == pytest.approx(0.4) and row["insertion_auc"] == pytest.approx(0.45)


def test_run_on_shapes_clip_writes_one_section_per_model(module, tmp_path, capsys):
    page = tmp_path / "text_order.md"
    results = module["main"](["--model", "shapes", "--scenes", "6", "--steps", "4", "--write", str(page)])
    rows = results["softmax"]
    assert set(rows) == set(module["METHODS"])
    assert all(0 <= v <= 1 for row in rows.values() for v in row.values())
    assert rows["Rollout"]["content_nonpositive"] == 0  # products of row-stochastic attention: every word > 0
    # the ReLU only turns negative scores into ties at zero: the same words are <= 0 with and without it
    ours, signed = rows["Grad-ECLIP (native)"], rows["Grad-ECLIP (native, no ReLU)"]
    assert ours["content_nonpositive"] == signed["content_nonpositive"]
    text = page.read_text()
    assert text.startswith("# Which words come first") and "<!-- text_order.py: shapes -->" in text
    assert "| Rollout | 0.00 |" in text and "--scenes 6" in text
    assert "Rollout" in capsys.readouterr().out


@pytest.mark.parametrize("backbone", ["vit", "resnet"])
def test_word_kinds_reads_both_shipped_tokenizers(module, backbone):
    if backbone == "resnet":
        pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")
    from captum_gradeclip.zoo import load_shapes_clip

    _, processor = load_shapes_clip(backbone)
    tokenizer = processor.tokenizer
    ids = tokenizer(["a red circle and a cyan cross"], return_tensors="pt")["input_ids"]
    kinds = module["word_kinds"](tokenizer, ids)[0].tolist()
    assert kinds[1:-1] == [2, 0, 1, 2, 2, 0, 1]  # between the start and end tokens


def test_every_shapes_spec_of_the_zoo_table_is_a_choice(monkeypatch, capsys):
    from captum_gradeclip import zoo

    monkeypatch.setitem(zoo.MODEL_SPECS, "shapes:twin", "vit")
    text_order = runpy.run_path(str(SCRIPT))
    with pytest.raises(SystemExit):
        text_order["main"](["--model", "shapes:twin", "--scenes", "1"])  # accepted, then --scenes is refused
    assert "--scenes must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        text_order["main"](["--model", "shapes:nope"])
    assert "invalid choice: 'shapes:nope'" in capsys.readouterr().err
