"""open_clip models (ViT in both layouts, ModifiedResNet, text towers): oracles, fast path and OpenAI equivalence."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters.open_clip import OpenCLIPAdapter
from captum_gradeclip.attr.base import AttentionAttribution
from tests.adapters.conftest import (
    CONTEXT,
    EMBED,
    capture,
    cosine_scores,
    loosened_map,
    make_open_clip,
    make_openai_clip,
    openai_text_oracle,
    openai_texts,
    openai_vit_oracle,
    resnet_pool_oracle,
    run_blocks,
)
from tests.conftest import count_hooks, general_path, rel_err

pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")

TOL = 1e-4


def test_recognised_and_geometry():
    model = make_open_clip(0)
    adapter = cg.get_adapter(model)
    assert type(adapter) is OpenCLIPAdapter
    assert adapter.patch_size() == (8, 8) and adapter.image_size() == (32, 32)
    resnet = cg.get_adapter(make_open_clip(0, resnet=True))
    assert resnet.patch_size() == (32, 32) and resnet.image_size() == (96, 96)


@pytest.mark.parametrize(("batch_first", "layer_scale"), [(True, None), (False, None), (True, 0.5)])
def test_vit_and_text_match_oracles_in_both_layouts(batch_first, layer_scale):
    model = make_open_clip(1, batch_first=batch_first, layer_scale=layer_scale)
    assert model.visual.transformer.resblocks[0].attn.batch_first is batch_first
    x, refs, cols = torch.randn(2, 3, 32, 32), torch.randn(3, EMBED), torch.tensor([2, 0])
    sim = cg.ImageTextSimilarity(model, text_embeds=refs)
    with torch.no_grad():
        assert torch.allclose(sim.adapter.embed_images(x, True), model.encode_image(x), atol=1e-6)
    for layers in (1, 2):
        got = cg.GradECLIP(sim, layers=layers).attribute(x, target=cols.tolist())
        want = openai_vit_oracle(model, x, refs, cols, layers=layers)
        assert want.abs().max() > 0
        assert rel_err(got, want) <= TOL
    ids, image_refs, tcols = openai_texts(3, seed=1), torch.randn(2, EMBED), torch.tensor([1, 0, 1])
    tok = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=image_refs)).attribute(ids, target=tcols.tolist())
    want = openai_text_oracle(model, ids, image_refs, tcols, layers=2)
    assert want.abs().max() > 0
    assert rel_err(tok, want) <= TOL


@pytest.mark.parametrize("mode", ["native", "paper"])
def test_resnet_attention_pool_matches_probability_oracle(mode):
    model = make_open_clip(2, resnet=True)
    x, refs, cols = torch.randn(2, 3, 96, 96), torch.randn(3, EMBED), torch.tensor([0, 2])
    got = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs), mode=mode).attribute(x, target=cols.tolist())
    want = resnet_pool_oracle(model, x, refs, cols, heads=1 if mode == "paper" else None)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize("resnet", [False, True])
def test_same_weights_as_openai_clip_give_the_same_maps(resnet):
    pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")
    openai = make_openai_clip(3, resnet=resnet)
    model = make_open_clip(99, resnet=resnet)
    model.load_state_dict(openai.state_dict())
    size = 96 if resnet else 32
    x, refs = torch.randn(2, 3, size, size), torch.randn(3, EMBED)
    ids, image_refs = openai_texts(2, seed=3), torch.randn(2, EMBED)
    with torch.no_grad():
        assert (model.encode_image(x) - openai.encode_image(x)).abs().max() <= 1e-5
        assert (model.encode_text(ids) - openai.encode_text(ids)).abs().max() <= 1e-5
    for mode in ("native", "paper"):
        ours = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs), mode=mode).attribute(x)
        theirs = cg.GradECLIP(cg.ImageTextSimilarity(openai, text_embeds=refs), mode=mode).attribute(x)
        assert theirs.abs().max() > 0 and rel_err(ours, theirs) <= TOL
        ours_t = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=image_refs), mode=mode).attribute(ids)
        theirs_t = cg.GradECLIP(cg.TextImageSimilarity(openai, image_embeds=image_refs), mode=mode).attribute(ids)
        assert theirs_t.abs().max() > 0 and rel_err(ours_t, theirs_t) <= TOL


@pytest.mark.parametrize(("resnet", "batch_first"), [(False, True), (False, False), (True, True)])
def test_fast_path_equals_general_path(resnet, batch_first, monkeypatch):
    model = make_open_clip(4, resnet=resnet, batch_first=batch_first)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(4, EMBED), score="softmax")
    x = torch.randn(2, 3, *((64, 96) if resnet else (40, 32)))
    for mode in ("native", "paper"):
        fast, general = cg.GradECLIP(sim, mode=mode), general_path(sim, mode=mode)
        for target in (None, [3, 1]):
            b = general.attribute(x, target=target)
            with monkeypatch.context() as patch:
                patch.setattr(AttentionAttribution, "_run_probed", lambda *a: pytest.fail("general path taken"))
                a = fast.attribute(x, target=target)
            assert b.abs().max() > 0
            assert rel_err(a, b) <= TOL


def test_every_target_equals_per_pair_loop_and_model_is_untouched():
    model = make_open_clip(5, batch_first=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, EMBED))
    x = torch.randn(2, 3, 32, 32)
    explainer = cg.GradECLIP(sim, layers=2)
    every = explainer.attribute(x)
    for n in range(2):
        for j in range(3):
            assert rel_err(every[n : n + 1, j : j + 1], explainer.attribute(x[n : n + 1], target=j)) <= TOL
    assert count_hooks(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("custom_text", [False, True])
def test_bidirectional_text_tower_pooled_at_the_last_position(custom_text):
    model = make_open_clip(6, custom_text=custom_text, no_causal_mask=True, pool_type="last", pad_id=0)
    tower = model.text if custom_text else model
    ids = openai_texts(3, seed=6)
    ids[:, -1] = 7  # a word in the pooled (last) position
    refs, cols = torch.randn(2, EMBED), torch.tensor([0, 1, 1])
    mask = None if custom_text else (ids != 0).long()  # open_clip.CLIP does not keep the pad id: give a mask
    tsim = cg.TextImageSimilarity(model, image_embeds=refs)
    got = cg.GradECLIP(tsim).attribute(ids, target=cols.tolist(), additional_forward_args=(mask,))
    # oracle: every position attends to every position; the pooled token is the last one
    blocks = tower.transformer.resblocks
    y, seen = run_blocks(blocks, 0, capture(blocks[0], lambda: model.encode_text(ids)))
    emb = tower.ln_final(y)[:, -1] @ tower.text_projection
    assert torch.allclose(emb, model.encode_text(ids), atol=1e-5)
    s = cosine_scores(emb, refs)[torch.arange(3), cols].sum()
    keys = torch.ones_like(ids, dtype=torch.bool)
    total = 0
    for probs, q, k in seen:
        grad = torch.autograd.grad(s, probs, retain_graph=True)[0][:, :, -1]
        total = total + loosened_map(grad, q[:, -1], k, probs.shape[1], keys)
    want = torch.relu(total) * (ids != 0)
    want[:, -1] = 0
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    assert (got[:, -1] == 0).all() and (got[ids == 0] == 0).all()


def test_logit_score_adds_the_logit_bias():
    import open_clip

    model = open_clip.CLIP(
        EMBED,
        vision_cfg=dict(layers=1, width=64, patch_size=8, image_size=32),
        text_cfg=dict(context_length=CONTEXT, vocab_size=50, width=32, heads=2, layers=1),
        init_logit_bias=-3.0,
    ).eval()
    refs, x = torch.randn(2, EMBED), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = cg.ImageTextSimilarity(model, text_embeds=refs, score="logit")(x)
        want = model.logit_scale.exp() * cosine_scores(model.encode_image(x), refs) + model.logit_bias
    assert torch.allclose(got, want, atol=1e-5)


def test_open_clip_tokenizer_strings():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    model = make_open_clip(7, vocab_size=49408, context_length=77)
    texts = ["a photo of a dog", "a red circle"]
    sim = cg.ImageTextSimilarity(model, texts=texts, tokenizer=tokenizer)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    assert torch.allclose(sim.reference_embeds, want, atol=1e-6)


@pytest.mark.parametrize(
    ("vision", "message"),
    [
        (dict(attentional_pool=True), "attentional pooler"),
        (dict(pool_type="avg"), "averaging"),
        (dict(qk_norm=True), "nn.MultiheadAttention"),
    ],
)
def test_unsupported_towers_raise_a_clear_error(vision, message):
    import open_clip

    cfg = dict(layers=1, width=64, patch_size=8, image_size=32, **vision)
    model = open_clip.CLIP(EMBED, vision_cfg=cfg, text_cfg=dict(context_length=CONTEXT, vocab_size=50, width=32))
    with pytest.raises(ValueError, match=message):
        cg.GradECLIP(cg.ImageTextSimilarity(model.eval(), text_embeds=torch.randn(2, EMBED)))
