"""Similarity wrappers: scores, reference handling, and clear errors for bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import captum_gradeclip as cg
from tests.conftest import BOS, EOS, PAD, make_clip, random_texts


def test_cosine_logit_softmax_scores(clip):
    ids, mask = random_texts(3, 7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        img = clip.get_image_features(pixel_values=x).pooler_output
        txt = clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        cos = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        scale = clip.logit_scale.exp()
        texts = {"input_ids": ids, "attention_mask": mask}
        assert torch.allclose(cg.ImageTextSimilarity(clip, texts)(x), cos, atol=1e-6)
        assert torch.allclose(cg.ImageTextSimilarity(clip, text_embeds=txt * 7)(x), cos, atol=1e-6)
        assert torch.allclose(cg.ImageTextSimilarity(clip, texts, score="logit")(x), scale * cos, atol=1e-5)
        soft = cg.ImageTextSimilarity(clip, texts, score="softmax")(x)
        assert torch.allclose(soft, (scale * cos).softmax(-1), atol=1e-6)
        tsim = cg.TextImageSimilarity(clip, images=x)
        assert torch.allclose(tsim(ids, mask), cos.T, atol=1e-6)


def _word_tokenizer():
    vocab = {"<s>": BOS, "<pad>": PAD, "<unk>": 2, "</s>": EOS, "a": 4, "red": 5, "circle": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def test_texts_as_strings_use_the_given_tokenizer(clip):
    tokenizer = _word_tokenizer()
    sim = cg.ImageTextSimilarity(clip, ["a red circle", "a circle"], tokenizer=tokenizer)
    batch = tokenizer(["a red circle", "a circle"], padding=True, return_tensors="pt")
    with torch.no_grad():
        txt = clip.get_text_features(**batch).pooler_output
    assert torch.allclose(sim.reference_embeds, F.normalize(txt, dim=-1), atol=1e-6)


def test_reference_embeddings_are_buffers_not_parameters(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(4, 16))
    assert "reference_embeds" in dict(sim.named_buffers())
    assert sim.num_references == 4


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "error", "pattern"),
    [
        (torch.randn(3, 32, 32), ValueError, r"`pixel_values` must have shape \(N, 3, H, W\)"),
        (torch.randn(1, 1, 32, 32), ValueError, r"`pixel_values` must have shape \(N, 3, H, W\)"),
        (torch.randn(1, 3, 30, 32), ValueError, "`pixel_values` height and width must be positive multiples"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "`pixel_values` contains NaN"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.long), TypeError, "`pixel_values` must be a floating-point"),
    ],
)
def test_bad_pixel_values(clip, x, error, pattern):
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16)))
    with pytest.raises(error, match=pattern):
        explainer.attribute(x, target=0)


def test_size_must_be_native_without_interpolation(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16), interpolate_pos_encoding=False)
    with pytest.raises(ValueError, match=r"`pixel_values` must be \(32, 32\) when interpolate_pos_encoding=False"):
        cg.GradECLIP(sim).attribute(torch.randn(1, 3, 40, 32), target=0)
    assert cg.GradECLIP(sim).attribute(torch.randn(1, 3, 32, 32), target=0).shape == (1, 1, 4, 4)


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (2, r"`target` must index the wrapper's 2 output columns"),
        (-3, r"`target` must index the wrapper.s 2 output columns \(0\.\.1, or -2\.\.-1 from the end\); got \[-3\]"),
        ([0], r"`target` list must have one entry per example \(2\)"),
        ([0, 1, 1], r"`target` list must have one entry per example"),
        (torch.tensor([0.5, 1.0]), r"got a tensor of dtype torch.float32"),
    ],
)
def test_bad_target(clip, target, pattern):
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16)))
    with pytest.raises((ValueError, TypeError), match=pattern):
        explainer.attribute(torch.randn(2, 3, 32, 32), target=target)


def test_bad_text_inputs(clip):
    explainer = cg.GradECLIP(cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16)))
    ids, mask = random_texts(2, 6)
    with pytest.raises(TypeError, match="`input_ids` must be an integer tensor"):
        explainer.similarity(ids.float(), mask)  # the wrapper itself takes ids only
    # whole-number floats are ids (Captum's NoiseTunnel casts them, also with stdevs=0.0); noise is refused
    plain = explainer.attribute(ids, target=0, additional_forward_args=(mask,))
    assert torch.equal(explainer.attribute(ids.float(), target=0, additional_forward_args=(mask,)), plain)
    with pytest.raises(ValueError, match="Token ids cannot take noise"):
        explainer.attribute(ids.float() + 0.25, target=0, additional_forward_args=(mask,))
    with pytest.raises(ValueError, match="`attention_mask` must have the shape of `input_ids`"):
        explainer.attribute(ids, target=0, additional_forward_args=(mask[:, :4],))
    with pytest.raises(ValueError, match="`input_ids` is empty"):
        explainer.attribute(ids[:, :0], target=0, additional_forward_args=(mask[:, :0],))
    empty_mask = mask.clone()
    empty_mask[1, 1:] = 0
    with pytest.raises(ValueError, match="`attention_mask` marks a text with fewer than 2 tokens"):
        explainer.attribute(ids, target=0, additional_forward_args=(empty_mask,))
    with pytest.raises(ValueError, match="`input_ids` must have shape"):
        explainer.attribute(ids[0], target=0)
    with pytest.raises(ValueError, match="`texts` must be a non-empty list of non-empty strings"):
        cg.ImageTextSimilarity(clip, ["a red circle", "  "], tokenizer=_word_tokenizer())
    with pytest.raises(ValueError, match="`texts` must be a non-empty list"):
        cg.ImageTextSimilarity(clip, [], tokenizer=_word_tokenizer())


def test_bad_options(clip):
    sim = cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"`layers` must be an int in \[1, 2\]"):
        cg.GradECLIP(sim, layers=3)
    with pytest.raises(ValueError, match=r"`layers` must be an int"):
        cg.GradECLIP(sim, layers=0)
    tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"`layers` must be an int in \[1, 3\]"):
        cg.GradECLIP(tsim, layers=8)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        cg.GradECLIP(sim, mode="fast")
    with pytest.raises(ValueError, match="`qk_source` must be one of"):
        cg.GradECLIP(sim, mode="paper", qk_source="proj")
    with pytest.raises(ValueError, match="`qk_source` applies to mode='paper' only"):
        cg.GradECLIP(sim, qk_source="out_proj")
    with pytest.raises(ValueError, match="`score` must be one of"):
        cg.ImageTextSimilarity(clip, text_embeds=torch.randn(2, 16), score="prob")
    with pytest.raises(ValueError, match="`text_embeds` must be a non-empty"):
        cg.ImageTextSimilarity(clip, text_embeds=torch.randn(16))
    with pytest.raises(ValueError, match="exactly one of `texts` and `text_embeds`"):
        cg.ImageTextSimilarity(clip)
    with pytest.raises(ValueError, match="`layer` must be one attention block"):
        cg.GradECLIP(sim, clip.text_model.encoder.layers[0])


def test_model_that_is_not_a_clip():
    with pytest.raises(TypeError, match=r"`model` must be an image-text model of a supported loader \(transformers"):
        cg.ImageTextSimilarity(torch.nn.Linear(3, 3), text_embeds=torch.randn(2, 16))
    with pytest.raises(TypeError, match="`forward_func` must be a captum_gradeclip similarity wrapper"):
        cg.GradECLIP(torch.nn.Linear(3, 3))


def test_embedding_dimension_mismatch_is_named():
    model = make_clip(0)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 8))
    with pytest.raises(ValueError, match="reference embeddings have dimension 8, but the model embeds to 16"):
        sim(torch.randn(1, 3, 32, 32))


def test_a_text_cut_before_its_end_token_warns_though_its_padding_is_the_end_token(clip):
    """CLIP tokenizers pad with the end-token id: padding (attention mask 0) is no end token."""
    ids = torch.tensor([[BOS, 4, 5, 6, 7], [BOS, 4, EOS, EOS, EOS]])  # row 0 cut before its end, padded with EOS
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    with pytest.warns(UserWarning, match=r"`input_ids` row\(s\) \[0\] hold no end-of-text token \(id 3\)"):
        cg.ImageTextSimilarity(clip, {"input_ids": ids, "attention_mask": mask})
    ids[0, 3:] = EOS
    with pytest.warns(UserWarning, match=r"`input_ids` row\(s\) \[0\] hold no end-of-text token \(id 3\)"):
        cg.ImageTextSimilarity(clip, {"input_ids": ids, "attention_mask": mask})
    mask[0, 3] = 1  # now the first EOS is attended: the text ends there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cg.ImageTextSimilarity(clip, {"input_ids": ids, "attention_mask": mask})


def test_a_text_of_exactly_the_context_length_is_not_overlong(clip):
    """The context (16 here) counts start and end tokens: 14 words fill it exactly, 15 are one token too many."""
    exact = " ".join(["a", "red", "circle"] * 4 + ["a", "circle"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim = cg.ImageTextSimilarity(clip, [exact, "a circle"], tokenizer=_word_tokenizer())
        ids, mask = random_texts(2, 16)
        ids[0], mask[0] = torch.tensor([BOS, *[4] * 14, EOS]), 1  # exactly 16 tokens, all attended
        tsim = cg.TextImageSimilarity(clip, image_embeds=torch.randn(1, 16))
        maps = cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
    assert sim.num_references == 2 and maps.shape == (2, 16) and bool(torch.isfinite(maps).all())
    with pytest.warns(UserWarning, match=r"text 0 has 17 tokens; the model reads the first 16"):
        cg.ImageTextSimilarity(clip, [exact + " red", "a circle"], tokenizer=_word_tokenizer())
    with pytest.raises(ValueError, match=r"`input_ids` has 17 tokens; the model's text context is 16"):
        tsim(torch.cat([ids, ids[:, -1:]], 1), torch.cat([mask, mask[:, -1:]], 1))


class _OnAccelerator(torch.Tensor):
    """A CPU tensor that says it lives on a GPU, so that ``require`` defers its checks (as it does for CUDA
    tensors) and the deferred read at the end of the block runs on real values; the meta-device stand-in
    answers every read with True and so cannot fail a check."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda")

    def to(self, *args, **kwargs) -> torch.Tensor:  # the one copy the block makes
        return self.as_subclass(torch.Tensor)


def test_deferred_checks_raise_when_one_of_several_fails():
    from captum_gradeclip.wrappers import deferred_checks, require

    def on_gpu(value: bool) -> torch.Tensor:
        return torch.tensor(value).as_subclass(_OnAccelerator)

    reached = []
    with pytest.raises(ValueError, match=r"^the second check$"):
        with deferred_checks():
            require(on_gpu(True), "the first check")
            require(on_gpu(False), "the second check")
            require(on_gpu(True), "the third check")
            require(on_gpu(True), "a warning", warn=True)
            reached.append("the end of the block")
    assert reached == ["the end of the block"], "the checks waited for the end of the block"
    with pytest.raises(ValueError, match=r"^the third check$"):  # errors first, whatever the order
        with deferred_checks():
            require(on_gpu(False), "a warning", warn=True)
            require(on_gpu(True), "the second check")
            require(on_gpu(False), "the third check")
    with pytest.warns(UserWarning, match=r"^the second warning$") as caught:
        with deferred_checks():
            require(on_gpu(True), "the first warning", warn=True)
            require(on_gpu(False), "the second warning", warn=True)
            require(on_gpu(True), "a check")
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with deferred_checks():
            for _ in range(3):
                require(on_gpu(True), "never")


def test_deferred_text_checks_raise_when_one_row_fails_one_check(clip):
    """The wrapper's own text checks on 'GPU' ids: the vocabulary check fails, the mask and end checks pass."""
    from captum_gradeclip.wrappers import _check_text, deferred_checks

    adapter = cg.TextImageSimilarity(clip, image_embeds=torch.randn(1, 16)).adapter
    ids, mask = random_texts(3, 6)
    ids[1, 1] = 70  # outside the vocabulary of 50
    reached = []
    with pytest.raises(ValueError, match=r"`input_ids` holds ids outside the vocabulary \[0, 50\): 70"):
        with deferred_checks():
            _check_text(adapter, ids.as_subclass(_OnAccelerator), mask.as_subclass(_OnAccelerator))
            reached.append("deferred")
    assert reached == ["deferred"]
    ids[1, 1] = 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with deferred_checks():
            _check_text(adapter, ids.as_subclass(_OnAccelerator), mask.as_subclass(_OnAccelerator))
