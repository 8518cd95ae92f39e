"""fp16 and bf16 at every public entry point: every loader, both modes, every baseline, the metrics.

The reference is the same model in float32; the error bounds are measured with a margin
(bf16 keeps 8 mantissa bits, fp16 11). Where the loader itself cannot run a dtype on the
CPU, the error says what to do.
"""

from __future__ import annotations

import copy

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import baselines, metrics
from captum_gradeclip.adapters import get_adapter
from captum_gradeclip.attr.grad_eclip import GradECLIP
from captum_gradeclip.cli import convert_model
from tests.adapters.conftest import EMBED, LOADERS, Loader, make_openai_clip
from tests.baselines.conftest import IDS, METHODS
from tests.conftest import make_clip, random_texts, rel_err

DTYPES = [(torch.bfloat16, 0.06), (torch.float16, 0.01)]
DTYPE_IDS = ["bf16", "fp16"]


def _lowered(model, dtype):
    return convert_model(copy.deepcopy(model), dtype)  # OpenAI clip: float16 through clip.model.convert_weights


#: the loaders in both token layouts and the ResNet attention pool, and the HF-only towers
NAMES = ["hf", "openai-vit", "openai-resnet", "open_clip-vit", "open_clip-resnet", "siglip", "blip"]


@pytest.fixture(scope="module", params=NAMES)
def loader(request) -> tuple[str, Loader, torch.nn.Module]:
    spec = LOADERS[request.param]
    return request.param, spec, spec.load(0)  # open_clip and clip are extras: the HF loaders run without them


@pytest.mark.parametrize(("dtype", "tol"), DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["native", "paper"])
def test_grad_eclip_on_every_loader_matches_float32(loader, dtype, tol, mode):
    name, spec, model = loader
    side, embed = spec.side, spec.embed
    if name.startswith("openai") and dtype is torch.bfloat16:
        pytest.skip("OpenAI clip converts to float16 only (clip.model.convert_weights); see the error test")
    low = _lowered(model, dtype)
    torch.manual_seed(1)
    x, refs = torch.randn(2, 3, side, side), torch.randn(3, embed)
    ref = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=refs), mode=mode).attribute(x)
    got = cg.GradECLIP(cg.ImageTextSimilarity(low, text_embeds=refs.to(dtype)), mode=mode).attribute(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    # the map may lose no more precision than the model's own forward does (SigLIP's tiny, sharpened
    # attention loses 14% of its embedding in bf16 already)
    with torch.no_grad():
        forward_err = rel_err(
            get_adapter(low).embed_images(x.to(dtype), True).float(), get_adapter(model).embed_images(x, True)
        )
    assert rel_err(got.float(), ref) <= max(tol, 3 * forward_err)

    ids, mask = spec.texts(2, 0)
    extra = (mask,)
    images = torch.randn(2, embed)
    ref_t = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=images)).attribute(
        ids, target=1, additional_forward_args=extra
    )
    got_t = cg.GradECLIP(cg.TextImageSimilarity(low, image_embeds=images.to(dtype))).attribute(
        ids, target=1, additional_forward_args=extra
    )
    assert got_t.dtype == dtype and torch.isfinite(got_t).all()
    # text maps sum signed layer maps before the ReLU, so rounding shows most where they cancel: the
    # per-text direction of the scores is what must survive, up to what the model's own forward loses (measured:
    # cosine >= 0.991 in bf16 but 0.942 for SigLIP's text that ends early, whose bf16 embedding is 19% off; >= 0.996
    # in fp16)
    with torch.no_grad():
        low_t, ref_e = get_adapter(low).embed_texts(ids, mask).float(), get_adapter(model).embed_texts(ids, mask)
    forward_err_t = (low_t - ref_e).abs().amax(-1) / ref_e.abs().amax(-1)  # rel_err per text
    cosine = torch.nn.functional.cosine_similarity(got_t.float(), ref_t, dim=-1)
    silent = ref_t.abs().amax(-1) == 0  # every layer sum clamped by the ReLU: nothing to point at
    assert (1 - cosine[~silent] <= forward_err_t[~silent].clamp(min=5 * tol / 6)).all(), (cosine, forward_err_t)
    assert (got_t[silent].float().abs() <= 5 * tol * ref_t.abs().max()).all()


def test_openai_clip_cast_whole_to_bf16_gets_an_error_that_says_what_to_do():
    pytest.importorskip("clip")
    low = make_openai_clip(0).to(torch.bfloat16)  # its float32 LayerNorms now hold bf16 weights
    sim = cg.ImageTextSimilarity(low, text_embeds=torch.randn(2, EMBED, dtype=torch.bfloat16))
    x = torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)
    for explainer in (cg.GradECLIP(sim), baselines.RawAttention(sim)):
        with pytest.raises(RuntimeError, match=r"convert_weights.*or use float32"):
            explainer.attribute(x, target=0)


def test_unsupported_low_precision_op_says_use_float32(monkeypatch):
    model = make_clip(0).to(torch.float16)
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16, dtype=torch.float16)))

    def unsupported(*args, **kwargs):
        raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")

    monkeypatch.setattr(GradECLIP, "_layer_map", unsupported)
    with pytest.raises(RuntimeError, match=r"does not support \['torch.float16'\] on cpu: use float32"):
        explainer.attribute(torch.randn(1, 3, 32, 32, dtype=torch.float16), target=0)
    monkeypatch.setattr(GradECLIP, "_layer_map", lambda *a: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match=r"^other$"):
        explainer.attribute(torch.randn(1, 3, 32, 32, dtype=torch.float16), target=0)


@pytest.mark.parametrize(("dtype", "tol"), DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_every_baseline_matches_float32(method, kwargs, dtype, tol):
    model = make_clip(2)
    torch.manual_seed(3)
    x, refs = torch.randn(2, 3, 32, 32), torch.randn(3, 16)
    ref = method(cg.ImageTextSimilarity(model, text_embeds=refs), **kwargs).attribute(x)
    low = model.to(dtype)
    got = method(cg.ImageTextSimilarity(low, text_embeds=refs.to(dtype)), **kwargs).attribute(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    # M2IB optimises through a sigmoid for a few steps and Grad-CAM clamps sums near zero: looser there
    loose = 4 if method in (baselines.M2IB, baselines.TokenGradCAM) else 1
    assert rel_err(got.float(), ref) <= loose * 2 * tol


@pytest.mark.parametrize(("dtype", "tol"), DTYPES, ids=DTYPE_IDS)
def test_metrics_match_float32(dtype, tol):
    model = make_clip(4)
    torch.manual_seed(5)
    x, refs = torch.randn(3, 3, 32, 32), torch.randn(3, 16)
    ids, mask = random_texts(3, 7, seed=2)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 4:20] = True

    def run(m, d):
        sim = cg.ImageTextSimilarity(m, text_embeds=refs.to(d))
        maps = cg.GradECLIP(sim).attribute(x.to(d), target=[0, 1, 2])
        tsim = cg.TextImageSimilarity(m, image_embeds=refs[:2].to(d))
        tokens = cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
        return {
            "deletion": metrics.image_deletion(sim, x.to(d), maps, target=[0, 1, 2], baseline="mean").auc,
            "insertion": metrics.image_insertion(sim, x.to(d), maps, target=[0, 1, 2], baseline="mean").auc,
            "text_deletion": metrics.text_deletion(tsim, ids, tokens, target=0, additional_forward_args=(mask,)).auc,
            "energy": metrics.energy_pointing_game(maps, masks),
            "pointing": metrics.pointing_game(maps, masks).float(),
        }

    ref, got = run(model, torch.float32), run(model.to(dtype), dtype)
    for key in ref:
        assert torch.isfinite(got[key]).all(), key
        torch.testing.assert_close(got[key].float(), ref[key].float(), rtol=0, atol=10 * tol, msg=key)
