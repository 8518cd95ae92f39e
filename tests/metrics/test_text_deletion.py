"""Text deletion and insertion against hand-built texts scored by the same wrapper."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.metrics import text_deletion, text_insertion
from captum_gradeclip.metrics.text_deletion import remove_tokens
from tests.conftest import BOS, EOS, PAD, VOCAB, make_clip

IDS = torch.tensor([[BOS, 10, 11, 12, EOS, PAD], [BOS, 20, EOS, PAD, PAD, PAD]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])


@pytest.fixture(scope="module")
def tsim():
    return cg.TextImageSimilarity(make_clip(4), image_embeds=torch.randn(3, 16))


def _score(tsim, ids, mask, col):
    return tsim(torch.tensor(ids), torch.tensor(mask)).detach()[:, col]


def test_remove_tokens_pads_in_place_or_repacks():
    removed = torch.tensor([[False, False, True, False, False, False]] * 2)
    ids, mask = remove_tokens(IDS[:1], MASK[:1], removed[:1], "pad", PAD)
    assert ids.tolist() == [[BOS, 10, PAD, 12, EOS, PAD]] and mask.tolist() == [[1, 1, 0, 1, 1, 0]]
    ids, mask = remove_tokens(IDS[:1], MASK[:1], removed[:1], "delete", PAD)
    assert ids.tolist() == [[BOS, 10, 12, EOS, PAD, PAD]] and mask.tolist() == [[1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize("mode", ["pad", "delete"])
def test_known_order_gives_the_hand_built_curve(tsim, mode):
    scores = torch.tensor([[9.0, 1.0, 3.0, 2.0, 9.0, 9.0], [9.0, 5.0, 9.0, 9.0, 9.0, 9.0]])  # SOS/EOS/pad ignored
    d = text_deletion(tsim, IDS, scores, target=2, additional_forward_args=(MASK,), steps=3, mode=mode)
    # text 0 has 3 words, removed 11 then 12 then 10; text 1 has one word, removed at round(1/3)=0, round(2/3)=1
    if mode == "pad":
        texts = [
            ([BOS, 10, 11, 12, EOS, PAD], [1, 1, 1, 1, 1, 0]),
            ([BOS, 10, PAD, 12, EOS, PAD], [1, 1, 0, 1, 1, 0]),
            ([BOS, 10, PAD, PAD, EOS, PAD], [1, 1, 0, 0, 1, 0]),
            ([BOS, PAD, PAD, PAD, EOS, PAD], [1, 0, 0, 0, 1, 0]),
        ]
        empty = ([BOS, PAD, EOS, PAD, PAD, PAD], [1, 0, 1, 0, 0, 0])
    else:
        texts = [
            ([BOS, 10, 11, 12, EOS, PAD], [1, 1, 1, 1, 1, 0]),
            ([BOS, 10, 12, EOS, PAD, PAD], [1, 1, 1, 1, 0, 0]),
            ([BOS, 10, EOS, PAD, PAD, PAD], [1, 1, 1, 0, 0, 0]),
            ([BOS, EOS, PAD, PAD, PAD, PAD], [1, 1, 0, 0, 0, 0]),
        ]
        empty = ([BOS, EOS, PAD, PAD, PAD, PAD], [1, 1, 0, 0, 0, 0])
    expected0 = _score(tsim, [t for t, _ in texts], [m for _, m in texts], 2)
    torch.testing.assert_close(d.scores[0], expected0)
    full, none = _score(tsim, [IDS[1].tolist(), empty[0]], [MASK[1].tolist(), empty[1]], 2)
    torch.testing.assert_close(d.scores[1], torch.stack([full, full, none, none]))
    i = text_insertion(tsim, IDS, scores, target=2, additional_forward_args=(MASK,), steps=3, mode=mode)
    if mode == "pad":  # empty, then 11, then 11 and 12, then all
        inserted = [
            ([BOS, PAD, PAD, PAD, EOS, PAD], [1, 0, 0, 0, 1, 0]),
            ([BOS, PAD, 11, PAD, EOS, PAD], [1, 0, 1, 0, 1, 0]),
            ([BOS, PAD, 11, 12, EOS, PAD], [1, 0, 1, 1, 1, 0]),
        ]
    else:
        inserted = [
            ([BOS, EOS, PAD, PAD, PAD, PAD], [1, 1, 0, 0, 0, 0]),
            ([BOS, 11, EOS, PAD, PAD, PAD], [1, 1, 1, 0, 0, 0]),
            ([BOS, 11, 12, EOS, PAD, PAD], [1, 1, 1, 1, 0, 0]),
        ]
    inserted.append(texts[0])
    expected_insertion = _score(tsim, [t for t, _ in inserted], [m for _, m in inserted], 2)
    torch.testing.assert_close(i.scores[0], expected_insertion)
    torch.testing.assert_close(d.auc, torch.trapezoid(d.scores, d.fractions, dim=-1))


def test_sos_and_eos_are_never_removed_whatever_their_scores(tsim):
    scores = torch.tensor([[100.0, 1.0, 2.0, 3.0, 100.0, 100.0]] * 2)
    d = text_deletion(tsim, IDS, scores, target=0, additional_forward_args=(MASK,), steps=1)
    empty_ids = [[BOS, PAD, PAD, PAD, EOS, PAD], [BOS, PAD, EOS, PAD, PAD, PAD]]
    empty = _score(tsim, empty_ids, [[1, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]], 0)
    torch.testing.assert_close(d.scores[:, -1], empty)
    original = tsim(IDS, MASK).detach()[:, 0]
    torch.testing.assert_close(d.scores[:, 0], original)


def test_embedding_attributions_and_top_k(tsim):
    per_dim = torch.randn(2, 6, 32)
    a = text_deletion(tsim, IDS, per_dim, target=1, additional_forward_args=(MASK,), steps=3)
    b = text_deletion(tsim, IDS, per_dim.sum(-1), target=1, additional_forward_args=(MASK,), steps=3)
    torch.testing.assert_close(a.scores, b.scores)
    top = text_insertion(tsim, IDS, per_dim, target=1, additional_forward_args=(MASK,), steps=3, measure="top5")
    assert (top.scores == 1).all()  # 3 images: always in the top 5


def test_a_padding_id_that_moves_eos_is_refused():
    model = make_clip(5, eos_token_id=2)  # legacy rule: EOS is the highest id
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(1, 16))
    ids = torch.tensor([[BOS, 10, 11, VOCAB - 1]])
    with pytest.raises(ValueError, match="EOS"):
        text_deletion(tsim, ids, torch.tensor([[0.0, 2.0, 1.0, 0.0]]), target=0, pad_token_id=VOCAB - 1, steps=2)


def test_bad_arguments(tsim):
    with pytest.raises(TypeError, match="TextImageSimilarity"):
        text_deletion(cg.ImageTextSimilarity(make_clip(0), text_embeds=torch.randn(1, 16)), IDS, IDS.float(), 0)
    with pytest.raises(ValueError, match="mode"):
        text_deletion(tsim, IDS, IDS.float(), 0, (MASK,), mode="drop")
    with pytest.raises(ValueError, match="token scores"):
        text_deletion(tsim, IDS, torch.ones(2, 5), 0, (MASK,))
    with pytest.raises(ValueError, match="target"):
        text_insertion(tsim, IDS, IDS.float(), None, (MASK,))
