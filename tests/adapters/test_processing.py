"""The processing role: for every loader, a text's map and token scores are the same alone and beside longer texts."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters.processing import BPEProcessing, HFProcessing, ProcessingRole
from tests.adapters.conftest import make_blip, make_open_clip, make_siglip

ALONE = ["a red circle"]
BESIDE = ["a red circle", "a blue square and a green cross and a red circle"]
WORDS = "a red circle blue square green cross and".split()


def word_tokenizer(special: dict[str, int], template: str):
    """A word-level transformers tokenizer with ids below the tiny models' vocabulary (50)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = dict(special)
    for word in WORDS:
        vocab[word] = 10 + len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = [(name, i) for name, i in special.items() if name in template]
    core.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    pad = next(name for name in special if name in ("<pad>", "</s>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token=pad, model_max_length=16)


def hf_clip():
    model, processor = cg.zoo.load_shapes_clip()
    return (
        model,
        {"processor": processor},
        processor(images=cg.zoo.shapes.make_scene(3).image, return_tensors="pt")["pixel_values"],
    )


def siglip():  # pad = eos = 1, pooled at the last position
    tokenizer = word_tokenizer({"<unk>": 0, "</s>": 1}, "$A </s>")
    return make_siglip(), {"tokenizer": tokenizer}, torch.randn(1, 3, 32, 32)


def blip():  # [CLS] = 2, [SEP] = 3, pad = 0
    tokenizer = word_tokenizer({"<pad>": 0, "<unk>": 1, "[CLS]": 2, "[SEP]": 3}, "[CLS] $A [SEP]")
    return make_blip(), {"tokenizer": tokenizer}, torch.randn(1, 3, 32, 32)


def open_clip_model():
    open_clip = pytest.importorskip("open_clip")
    model = make_open_clip(vocab_size=49408, context_length=24)
    return model, {"tokenizer": open_clip.get_tokenizer("ViT-B-32", context_length=24)}, torch.randn(1, 3, 32, 32)


def openai_model():
    clip = pytest.importorskip("clip")
    from clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(16, 32, 2, 128, 8, 77, 49408, 64, 4, 2).eval()
    return model, {"tokenizer": clip.tokenize}, torch.randn(1, 3, 32, 32)


LOADERS = {"hf-clip": hf_clip, "siglip": siglip, "blip": blip, "open_clip": open_clip_model, "openai": openai_model}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_texts_map_and_token_scores_do_not_depend_on_the_texts_beside_it(loader):
    model, given, pixels = LOADERS[loader]()
    adapter = cg.get_adapter(model)
    assert isinstance(adapter, ProcessingRole)
    maps = []
    for texts in (ALONE, BESIDE):
        sim = cg.ImageTextSimilarity(model, texts, score="cosine", **given)
        maps.append(cg.GradECLIP(sim).attribute(pixels, target=0))
    assert maps[0].abs().sum() > 0
    assert torch.allclose(maps[0], maps[1], atol=1e-6, rtol=1e-5), f"{loader}: the map of {ALONE[0]!r} changed"
    processing = adapter.processing(given.get("processor"), given.get("tokenizer"))
    tsim = cg.TextImageSimilarity(model, images=pixels)
    words = []
    for texts in (ALONE, BESIDE):
        ids, mask = processing.tokenize(texts)
        scores = cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
        if isinstance(processing, BPEProcessing) and not hasattr(processing.bpe, "decoder"):
            words.append(scores[0][mask[0].bool()].tolist())
        else:
            words.append(processing.words(ids[0], scores[0]))
    if isinstance(words[0][0], tuple):
        assert [w.strip() for w, _ in words[0]] == ["a", "red", "circle"], words[0]
    flat = [[v for _, v in row] if isinstance(row[0], tuple) else row for row in words]
    assert torch.allclose(torch.tensor(flat[0]), torch.tensor(flat[1]), atol=1e-6, rtol=1e-5), loader


def test_siglip_pads_to_its_context_as_it_was_trained():
    model, given, _ = siglip()
    processing = cg.get_adapter(model).processing(None, given["tokenizer"])
    assert isinstance(processing, HFProcessing) and processing.padding == "max_length"
    ids, _mask = processing.tokenize(ALONE)
    assert ids.shape == (1, 16) and ids[0, :4].tolist() == given["tokenizer"]("a red circle")["input_ids"]
    assert (ids[0, 4:] == 1).all(), "padded with the pad id to max_position_embeddings"


def test_processing_refuses_what_it_cannot_do():
    model, given, _ = siglip()
    processing = cg.get_adapter(model).processing(None, given["tokenizer"])
    with pytest.raises(ValueError, match="images need the loader's processor"):
        processing.pixels(None)
    with pytest.raises(ValueError, match="`padding` must be 'longest' or 'max_length'"):
        HFProcessing(given["tokenizer"], padding=True)
    with pytest.raises(ValueError, match="no BPE vocabulary"):
        BPEProcessing(None, encode=lambda texts: torch.zeros(1, 3)).tokens(torch.zeros(3))
