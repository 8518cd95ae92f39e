"""Every baseline on every loader: twins agree, layouts agree, and the ResNet pool has its own oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.baselines import (
    RISE,
    AttentionRollout,
    MaskCLIP,
    TokenGradCAM,
)
from captum_gradeclip.baselines.captum_methods import score_difference_tolerance
from tests.adapters.conftest import (
    EMBED,
    LOADERS,
    make_blip,
    make_open_clip,
    make_siglip,
    openai_texts,
    openai_to_hf,
)
from tests.baselines.conftest import IDS, METHODS
from tests.conftest import assert_unchanged, model_snapshot

#: The loaders' keys of a class's ``loader_notes`` (the docs' rows).
NOTE_KEY = {"openai-resnet": "resnet", "open_clip-resnet": "resnet", "siglip": "siglip", "blip": "vit"}


@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_openai_clip_and_its_hf_twin_give_the_same_maps(method, kwargs):
    model = LOADERS["openai-vit"].load(3)
    refs, x = torch.randn(3, EMBED), torch.randn(2, 3, 32, 32)
    twin = openai_to_hf(model)
    ours = method(cg.ImageTextSimilarity(model, text_embeds=refs), **kwargs).attribute(x, target=[1, 2])
    theirs = method(cg.ImageTextSimilarity(twin, text_embeds=refs), **kwargs).attribute(x, target=[1, 2])
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-5)
    if "text" in method.modalities:
        ids, images = openai_texts(3, seed=6), torch.randn(2, EMBED)
        mask = (ids != 0).long()
        ours = method(cg.TextImageSimilarity(model, image_embeds=images), **kwargs)
        theirs = method(cg.TextImageSimilarity(twin, image_embeds=images), **kwargs)
        a = ours.attribute(ids, target=1, additional_forward_args=(mask,))
        b = theirs.attribute(ids, target=1, additional_forward_args=(mask,))
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
        assert a.abs().sum() > 0


@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_open_clip_batch_first_and_sequence_first_give_the_same_maps(method, kwargs):
    pytest.importorskip("open_clip", reason="needs the openclip extra: pip install -e '.[openclip]'")
    refs, x = torch.randn(2, EMBED), torch.randn(2, 3, 32, 32)
    sims = [cg.ImageTextSimilarity(make_open_clip(4, batch_first=bf), text_embeds=refs) for bf in (True, False)]
    maps = [method(sim, **kwargs).attribute(x) for sim in sims]
    atol = 1e-6
    if method.score_differences:  # the declared kind of map: rounding of the scores, times each patch's values
        atol = score_difference_tolerance(sims[0](x), x, tuple(maps[0].shape[-2:]))
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=atol)
    if "text" in method.modalities:
        ids = openai_texts(2, seed=1)
        scores = [
            method(cg.TextImageSimilarity(make_open_clip(4, batch_first=bf), image_embeds=refs), **kwargs).attribute(
                ids, target=0
            )
            for bf in (True, False)
        ]
        torch.testing.assert_close(scores[0], scores[1], rtol=1e-4, atol=1e-6)


def _pool_features(model, x):
    """The ResNet's last-stage feature map (the attention pool's input), as a leaf that requires grad."""
    seen = {}

    def leaf(_module, _args, output):
        seen["f"] = output.detach().requires_grad_()
        return seen["f"]

    handle = model.visual.layer4.register_forward_hook(leaf)
    try:
        emb = model.encode_image(x)
    finally:
        handle.remove()
    return emb, seen["f"]


@pytest.mark.parametrize("loader", ["openai-resnet", "open_clip-resnet"])
def test_resnet_grad_cam_is_classic_grad_cam_on_the_last_stage(loader):
    model = LOADERS[loader].load(5)
    refs, x = torch.randn(3, EMBED), torch.randn(2, 3, 96, 96)
    maps = TokenGradCAM(cg.ImageTextSimilarity(model, text_embeds=refs)).attribute(x)
    emb, f = _pool_features(model, x)
    scores = F.normalize(emb, dim=-1) @ F.normalize(refs, dim=-1).T
    oracle = []
    for j in range(3):
        (g,) = torch.autograd.grad(scores[:, j].sum(), f, retain_graph=True)
        alpha = g.mean((2, 3), keepdim=True)  # Selvaraju et al.: the spatially averaged gradient per channel
        oracle.append(torch.relu((alpha * f).sum(1)).detach())
    oracle = torch.stack(oracle, dim=1)
    assert maps.shape == oracle.shape == (2, 3, 3, 3)
    torch.testing.assert_close(maps, oracle, rtol=1e-4, atol=1e-6)
    assert (maps > 0).any()


@pytest.mark.parametrize("loader", ["openai-resnet", "open_clip-resnet"])
def test_resnet_maskclip_is_each_positions_value_through_the_pools_out_projection(loader):
    model = LOADERS[loader].load(6)
    refs, x = torch.randn(3, EMBED), torch.randn(2, 3, 96, 96)
    maps = MaskCLIP(cg.ImageTextSimilarity(model, text_embeds=refs)).attribute(x)
    pool = model.visual.attnpool
    with torch.no_grad():
        _, f = _pool_features(model, x)
        t = f.flatten(2).transpose(1, 2)
        t = torch.cat([t.mean(1, keepdim=True), t], 1) + pool.positional_embedding
        dense = pool.c_proj(pool.v_proj(t))  # MaskCLIP on a ResNet: no query-key attention, v then c_proj
        oracle = (F.normalize(dense, dim=-1) @ F.normalize(refs, dim=-1).T)[:, 1:].transpose(1, 2).reshape(2, 3, 3, 3)
    torch.testing.assert_close(maps, oracle, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["openai-resnet", "open_clip-resnet", "siglip", "blip"])
def test_every_method_on_pools_and_bidirectional_towers(name):
    spec = LOADERS[name]
    side, grid = spec.side, spec.grid
    model = spec.load(7)
    before = model_snapshot(model)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, spec.embed))
    x = torch.randn(2, 3, side, side)
    pooled = name != "blip"
    for method, kwargs in METHODS:
        note = method.loader_notes.get(NOTE_KEY[name], "")
        if note.startswith("no"):  # the class declares it does not apply to this loader, and says why
            with pytest.raises(TypeError, match=note.removeprefix("no").strip(" :")):
                method(sim, **kwargs).attribute(x, target=0)
            continue
        explainer = method(sim, **kwargs)
        if pooled and method.needs_self_attention:
            with pytest.raises(TypeError, match="attention pool"):
                explainer.attribute(x, target=0)
            continue
        maps = explainer.attribute(x)
        assert maps.shape == (2, 2, *((side, side) if method is RISE else grid)), method
        assert torch.isfinite(maps).all() and maps.abs().sum() > 0, method
    assert_unchanged(model, before)


@pytest.mark.parametrize(("make", "embed"), [(make_siglip, 32), (make_blip, EMBED)], ids=["siglip", "blip"])
def test_bidirectional_text_attention_is_read_without_a_causal_mask(make, embed):
    model = make(8)
    ids = torch.randint(4, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, embed))
    query, _, words = tsim.adapter.text_context(ids, mask)
    scores = AttentionRollout(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
    tower = model.text_model if hasattr(model, "text_model") else model.text_encoder
    with torch.no_grad():
        attentions = tower(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    rolled = torch.eye(8).expand(2, 8, 8)
    for a in attentions:  # the model's own (bidirectional) probabilities, first block to last
        a_hat = a.mean(1) + torch.eye(8)
        rolled = (a_hat / a_hat.sum(-1, keepdim=True)) @ rolled
    oracle = rolled[torch.arange(2), query] * words
    torch.testing.assert_close(scores, oracle, rtol=1e-4, atol=1e-6)
