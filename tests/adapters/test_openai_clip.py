"""OpenAI ``clip`` models (ViT and ModifiedResNet): oracles, fast path, batching, and equivalence with HF CLIP."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.adapters.openai_clip import OpenAICLIPAdapter
from captum_gradeclip.attr.base import AttentionAttribution
from tests.adapters.conftest import (
    EMBED,
    EOT,
    SOT,
    make_openai_clip,
    openai_text_oracle,
    openai_texts,
    openai_to_hf,
    openai_vit_oracle,
    resnet_pool_oracle,
)
from tests.conftest import count_hooks, general_path, rel_err

pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")

TOL = 1e-4


def test_recognised_by_class_module():
    model = make_openai_clip(0)
    assert type(model).__module__ == "clip.model"
    adapter = cg.get_adapter(model)
    assert type(adapter) is OpenAICLIPAdapter
    assert adapter.patch_size() == (8, 8) and adapter.image_size() == (32, 32) and adapter.num_channels() == 3
    resnet = cg.get_adapter(make_openai_clip(0, resnet=True))
    assert resnet.patch_size() == (32, 32) and resnet.image_size() == (96, 96)
    assert resnet.attention_blocks("image") == [resnet.model.visual.attnpool]


@pytest.mark.parametrize("resnet", [False, True])
def test_embeddings_are_the_models_own(resnet):
    model = make_openai_clip(1, resnet=resnet)
    adapter = cg.get_adapter(model)
    size = 96 if resnet else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(adapter.embed_images(x, True), model.encode_image(x), atol=1e-6)
        ids = openai_texts(3)
        assert torch.equal(adapter.embed_texts(ids, None), model.encode_text(ids))
        assert torch.equal(adapter.eos_index(ids, None), (ids == EOT).int().argmax(-1))


@pytest.mark.parametrize("layers", [1, 2])
def test_vit_native_matches_attention_probability_oracle(layers):
    model = make_openai_clip(2)
    x, refs, cols = torch.randn(3, 3, 32, 32), torch.randn(4, EMBED), torch.tensor([0, 3, 1])
    sim = cg.ImageTextSimilarity(model, text_embeds=refs)
    got = cg.GradECLIP(sim, layers=layers).attribute(x, target=cols.tolist())
    want = openai_vit_oracle(model, x, refs, cols, layers=layers)
    assert got.shape == (3, 1, 4, 4)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


def test_vit_paper_mode_matches_single_head_recomputation():
    model = make_openai_clip(3)
    x, refs, cols = torch.randn(2, 3, 32, 32), torch.randn(3, EMBED), torch.tensor([2, 0])
    sim = cg.ImageTextSimilarity(model, text_embeds=refs)
    got = cg.GradECLIP(sim, mode="paper").attribute(x, target=cols.tolist())
    assert rel_err(got, openai_vit_oracle(model, x, refs, cols, heads=1)) <= TOL
    assert rel_err(got, cg.GradECLIP(sim).attribute(x, target=cols.tolist())) > 1e-2  # 2 heads: modes differ


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("size", [(96, 96), (64, 128)])
def test_resnet_attention_pool_matches_probability_oracle(mode, size):
    model = make_openai_clip(4, resnet=True)
    x, refs, cols = torch.randn(2, 3, *size), torch.randn(3, EMBED), torch.tensor([1, 2])
    sim = cg.ImageTextSimilarity(model, text_embeds=refs)
    got = cg.GradECLIP(sim, mode=mode).attribute(x, target=cols.tolist())
    want = resnet_pool_oracle(model, x, refs, cols, heads=1 if mode == "paper" else None)
    assert got.shape == (2, 1, size[0] // 32, size[1] // 32)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize("layers", [1, 2])
def test_text_matches_per_layer_oracle(layers):
    model = make_openai_clip(5)
    ids, refs, cols = openai_texts(4, seed=5), torch.randn(3, EMBED), torch.tensor([0, 2, 1, 1])
    tsim = cg.TextImageSimilarity(model, image_embeds=refs)
    got = cg.GradECLIP(tsim, layers=layers).attribute(ids, target=cols.tolist())
    want = openai_text_oracle(model, ids, refs, cols, layers)
    assert got.shape == ids.shape
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    eos = ids.argmax(-1)
    assert (got[:, 0] == 0).all() and (got[torch.arange(4), eos] == 0).all() and (got[ids == 0] == 0).all()


@pytest.mark.parametrize("resnet", [False, True])
@pytest.mark.parametrize("mode", ["native", "paper"])
def test_fast_path_equals_general_path(resnet, mode, monkeypatch):
    model = make_openai_clip(6, resnet=resnet)
    size = (96, 64) if resnet else (32, 40)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(5, EMBED))
    x = torch.randn(3, 3, *size)
    fast, general = cg.GradECLIP(sim, mode=mode), general_path(sim, mode=mode)
    assert sim.adapter.pooled_tail(fast.blocks[0]) is not None
    for target in (None, 3, [4, 0, 2]):
        b = general.attribute(x, target=target)
        with monkeypatch.context() as patch:  # the fast path really runs: the general one would raise
            patch.setattr(AttentionAttribution, "_run_probed", lambda *a: pytest.fail("general path taken"))
            a = fast.attribute(x, target=target)
        assert b.abs().max() > 0
        assert rel_err(a, b) <= TOL


@pytest.mark.parametrize("resnet", [False, True])
def test_every_target_equals_per_pair_loop(resnet):
    model = make_openai_clip(7, resnet=resnet)
    size = 96 if resnet else 32
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, EMBED))
    x = torch.randn(2, 3, size, size)
    for mode in ("native", "paper"):
        explainer = cg.GradECLIP(sim, mode=mode)
        every = explainer.attribute(x)
        assert every.shape[:2] == (2, 3)
        for n in range(2):
            for j in range(3):
                assert rel_err(every[n : n + 1, j : j + 1], explainer.attribute(x[n : n + 1], target=j)) <= TOL
    ids = openai_texts(3, seed=7)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, EMBED))
    every = cg.GradECLIP(tsim).attribute(ids)
    for n in range(3):
        for j in range(2):
            assert rel_err(every[n : n + 1, j], cg.GradECLIP(tsim).attribute(ids[n : n + 1], target=j)) <= TOL


# -- the same weights in transformers' CLIPModel -------------------------------------------------


def test_key_mapping_gives_the_same_embeddings():
    model = make_openai_clip(8)
    hf = openai_to_hf(model)
    x, ids = torch.randn(2, 3, 32, 32), openai_texts(3, seed=8)
    with torch.no_grad():
        assert (model.encode_image(x) - hf.get_image_features(pixel_values=x).pooler_output).abs().max() <= 1e-5
        assert (model.encode_text(ids) - hf.get_text_features(input_ids=ids).pooler_output).abs().max() <= 1e-5
        for size in ((32, 32), (32, 48)):  # both interpolate the position embedding off the native grid
            y = torch.randn(2, 3, *size)
            ours = cg.get_adapter(model).embed_images(y, True)
            theirs = hf.get_image_features(pixel_values=y, interpolate_pos_encoding=True).pooler_output
            assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_grad_eclip_maps_equal_hf_clip_maps(mode, size):
    model = make_openai_clip(9)
    hf = openai_to_hf(model)
    refs, x = torch.randn(4, EMBED), torch.randn(3, 3, *size)
    ours = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs), mode=mode).attribute(x)
    theirs = cg.GradECLIP(cg.ImageTextSimilarity(hf, text_embeds=refs), mode=mode).attribute(x)
    assert ours.shape == theirs.shape == (3, 4, size[0] // 8, size[1] // 8)
    assert theirs.abs().max() > 0
    assert rel_err(ours, theirs) <= TOL
    ids = openai_texts(3, seed=9)
    mask = (torch.arange(ids.shape[1])[None] <= ids.argmax(-1)[:, None]).long()
    images = torch.randn(2, EMBED)
    ours_t = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=images), mode=mode).attribute(ids)
    theirs_t = cg.GradECLIP(cg.TextImageSimilarity(hf, image_embeds=images), mode=mode).attribute(
        ids, additional_forward_args=(mask,)
    )
    assert theirs_t.abs().max() > 0
    assert rel_err(ours_t, theirs_t) <= TOL


def test_model_is_left_unchanged_and_hook_free():
    model = make_openai_clip(10)
    model.visual.transformer.resblocks[0].requires_grad_(False)
    model.transformer.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, EMBED))
    for mode in ("native", "paper"):
        cg.GradECLIP(sim, mode=mode, layers=2).attribute(torch.randn(1, 3, 32, 32))
    cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=torch.randn(2, EMBED))).attribute(openai_texts(2), target=0)
    assert count_hooks(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes


def test_resnet_pool_probe_is_removed_after_an_exception():
    model = make_openai_clip(11, resnet=True)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, EMBED))
    explainer = general_path(sim)

    def boom(*_args):
        raise RuntimeError("boom")

    explainer._layer_map = boom
    with pytest.raises(RuntimeError, match="boom"):
        explainer.attribute(torch.randn(1, 3, 96, 96), target=0)
    assert sim.adapter._pool_probes == {} and count_hooks(model) == 0
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image(x), dim=-1) @ sim.reference_embeds.T
        assert torch.allclose(sim(x), want, atol=1e-6)


def test_sot_is_not_the_pooled_token():
    model = make_openai_clip(12)
    ids = torch.tensor([[SOT, 5, 6, EOT, 0, 0, 0, 0, 0, 0]])
    tok = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=torch.randn(1, EMBED))).attribute(ids, target=0)
    assert (tok[0, [0, 3, 4, 5]] == 0).all() and tok[0, 1:3].abs().sum() > 0
