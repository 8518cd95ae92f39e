"""Residual-stream access (``probe_layer``, ``project_tokens``, ``pad_token_id``, ``causal_text``) on every loader.

The oracle is the model itself: the projected pooled token must be the model's own
embedding, and an identity substitute must leave it unchanged in every token layout.
"""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters import get_adapter
from tests.adapters.conftest import LOADERS, Loader, make_openai_clip, make_vit_classifier
from tests.conftest import make_clip


@pytest.fixture(scope="module", params=list(LOADERS))
def loader(request) -> tuple[Loader, torch.nn.Module]:
    spec = LOADERS[request.param]
    return spec, spec.load(3)


def test_flags(loader):
    spec, model = loader
    adapter = get_adapter(model)
    assert adapter.causal_text is spec.causal
    assert adapter.pad_token_id() == spec.pad


def test_projected_pooled_image_token_is_the_embedding(loader):
    spec, model = loader
    adapter = get_adapter(model)
    x = torch.randn(2, 3, spec.side, spec.side)
    block = adapter.attention_blocks("image")[-1]
    with torch.no_grad():
        with adapter.probe(block, lambda _r, o: o) as record, adapter.probe_layer(block) as layer:
            embeds = adapter.embed_images(x, True)
        pooled = record.q.shape[1] == 1 != record.k.shape[1]
        if pooled:  # an attention pool: project its out-projected output
            tokens = adapter.project_tokens(adapter.out_projection(block)(record.o), "image")[:, 0]
        else:
            tokens = adapter.project_tokens(layer.y, "image")[:, 0]
    assert pooled == (type(block).__name__ == "AttentionPool2d" or adapter.image_prefix_tokens == 0)
    torch.testing.assert_close(tokens, embeds, rtol=1e-4, atol=1e-5)
    assert layer.x.shape[0] == 2 and layer.x.shape[1] == record.k.shape[1]  # batch-first, one row per key token


def test_projected_pooled_text_token_is_the_embedding(loader):
    spec, model = loader
    adapter = get_adapter(model)
    ids, mask = spec.texts(3, 1)
    block = adapter.attention_blocks("text")[-1]
    with torch.no_grad(), adapter.probe_layer(block) as layer:
        embeds = adapter.embed_texts(ids, mask)
    query, *_ = adapter.text_context(ids, mask)
    tokens = adapter.project_tokens(layer.y, "text")[torch.arange(3), query]
    torch.testing.assert_close(tokens, embeds, rtol=1e-4, atol=1e-5)
    assert layer.y.shape[:2] == ids.shape


@pytest.mark.parametrize("modality", ["image", "text"])
def test_substitutes_replace_the_tokens_in_every_layout(loader, modality):
    spec, model = loader
    adapter = get_adapter(model)
    blocks = adapter.attention_blocks(modality)
    block = blocks[0]
    if modality == "image":
        x = torch.randn(2, 3, spec.side, spec.side)

        def embed():
            return adapter.embed_images(x, True)
    else:
        ids, mask = spec.texts(2, 1)

        def embed():
            return adapter.embed_texts(ids, mask)

    with torch.no_grad():
        plain = embed()
        with adapter.probe_layer(block, lambda t: t.clone()) as same:
            kept = embed()
        with adapter.probe_layer(block, lambda t: t * 0.5) as half:
            changed = embed()
    torch.testing.assert_close(kept, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(changed, plain, atol=1e-4)
    torch.testing.assert_close(half.x, same.x * 0.5)


def test_the_pool_recomputes_its_mean_token():
    pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")
    model = make_openai_clip(5, resnet=True)
    adapter = get_adapter(model)
    pool = adapter.attention_blocks("image")[0]
    x = torch.randn(1, 3, 96, 96)

    def bump_mean(tokens):
        return torch.cat([tokens[:, :1] + 10.0, tokens[:, 1:]], dim=1)

    with torch.no_grad(), adapter.probe_layer(pool) as seen:
        plain = adapter.embed_images(x, True)
    torch.testing.assert_close(seen.x[:, 0], seen.x[:, 1:].mean(1))  # the mean token, then the 3x3 positions
    with torch.no_grad(), adapter.probe_layer(pool, bump_mean):
        bumped = adapter.embed_images(x, True)
    torch.testing.assert_close(bumped, plain)


def test_unsupported_blocks_and_loaders_raise_a_clear_error():
    model = make_clip(0)
    adapter = get_adapter(model)
    with pytest.raises(TypeError, match="probe_layer"):
        adapter.probe_layer(torch.nn.Linear(2, 2))
    classifier = get_adapter(make_vit_classifier(0))
    with pytest.raises(TypeError, match="project_tokens"):
        classifier.project_tokens(torch.randn(1, 2, 3), "image")
    assert cg.ImageTextSimilarity(model, text_embeds=torch.randn(1, 16)).adapter.pad_token_id() == 1
