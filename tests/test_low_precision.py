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
from captum_gradeclip.baselines import captum_methods as captum
from captum_gradeclip.cli import convert_model
from tests.adapters.conftest import EMBED, LOADERS, Loader, make_openai_clip
from tests.baselines.conftest import IDS, METHODS
from tests.conftest import make_clip, random_texts, rel_err

#: Every bound below is about 3x the error measured on these tiny models (CPU, torch 2.14), written next to it.
#: Here: the floor of Grad-ECLIP's image-map error on every loader and mode; measured at most 0.022 in bf16 and
#: 0.0045 in fp16 (open_clip ViT, paper mode) apart from SigLIP, whose bound is its own forward's error (below).
DTYPES = [(torch.bfloat16, 0.06), (torch.float16, 0.01)]
DTYPE_IDS = ["bf16", "fp16"]

#: Grad-ECLIP's text scores: the least ``1 - cosine`` to the float32 scores a text may lose (measured at most 2.8e-4
#: in bf16 and 8.8e-6 in fp16 where the model's own forward loses little), and the share of the float32 maximum
#: that a text whose float32 scores are all zero may show (measured 0.068 in bf16, exactly 0 in fp16).
TEXT_FLOOR = {torch.bfloat16: 1e-3, torch.float16: 3e-5}
SILENT = {torch.bfloat16: 0.2, torch.float16: 1e-3}  # fp16: nothing measured to scale; about 8 fp16 roundings

#: The baselines' relative error (max |low - float32| / max |float32|) on make_clip(2), every target: about 3x
#: what was measured, which is in the comment (bf16, fp16).
BASELINE_BOUNDS = {
    baselines.RawAttention: {torch.bfloat16: 0.03, torch.float16: 0.0063},  # 0.0097, 0.0021
    baselines.AttentionRollout: {torch.bfloat16: 0.015, torch.float16: 0.0032},  # 0.0047, 0.0011
    baselines.GAME: {torch.bfloat16: 0.09, torch.float16: 0.0053},  # 0.030, 0.0018
    baselines.TokenGradCAM: {torch.bfloat16: 0.084, torch.float16: 0.011},  # 0.028, 0.0037
    baselines.MaskCLIP: {torch.bfloat16: 0.029, torch.float16: 0.0036},  # 0.0096, 0.0012
    baselines.CLIPSurgery: {torch.bfloat16: 0.038, torch.float16: 0.005},  # 0.013, 0.0017
    baselines.RISE: {torch.bfloat16: 0.026, torch.float16: 0.0032},  # 0.0086, 0.0011
    baselines.M2IB: {torch.bfloat16: 0.013, torch.float16: 0.0014},  # 0.0043, 0.00047
    captum.CaptumSaliency: {torch.bfloat16: 0.12, torch.float16: 0.0081},  # 0.039, 0.0027
    captum.CaptumInputXGradient: {torch.bfloat16: 0.12, torch.float16: 0.0097},  # 0.041, 0.0032
    captum.CaptumLayerGradCam: {torch.bfloat16: 0.072, torch.float16: 0.0068},  # 0.024, 0.0023
    captum.CaptumIntegratedGradients: {torch.bfloat16: 0.06, torch.float16: 0.0078},  # 0.020, 0.0026
    # differences of two scores, each rounded to the dtype (see score_differences)
    captum.CaptumOcclusion: {torch.bfloat16: 0.15, torch.float16: 0.021},  # 0.051, 0.0070
    captum.CaptumFeatureAblation: {torch.bfloat16: 0.15, torch.float16: 0.021},  # 0.051, 0.0070
}

#: The metrics' absolute error on make_clip(4), about 3x what was measured (bf16, fp16); the metrics' values lie
#: between -0.46 and 0.41. The pointing game's hits were the same.
METRIC_BOUNDS = {
    "deletion": {torch.bfloat16: 0.022, torch.float16: 0.0051},  # 0.0073, 0.0017
    "insertion": {torch.bfloat16: 0.027, torch.float16: 0.0056},  # 0.0089, 0.0019
    "text_deletion": {torch.bfloat16: 0.0045, torch.float16: 0.0009},  # 0.0015, 0.00029
    "energy": {torch.bfloat16: 0.008, torch.float16: 0.0018},  # 0.0027, 0.00058
    "pointing": {torch.bfloat16: 0.0, torch.float16: 0.0},  # 0, 0
}


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
    # (measured: the map's error is at most 2.3x the forward's, SigLIP in fp16 and paper mode, 0.056 against 0.025)
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
    # (measured: 1 - cosine is at most 0.63 of the text's forward error, SigLIP's in bf16, 0.0089 against 0.014)
    floor = TEXT_FLOOR[dtype]
    assert (1 - cosine[~silent] <= forward_err_t[~silent].clamp(min=floor)).all(), (cosine, forward_err_t)
    assert (got_t[silent].float().abs() <= SILENT[dtype] * ref_t.abs().max()).all()


def test_openai_clip_cast_whole_to_bf16_gets_an_error_that_says_what_to_do():
    pytest.importorskip("clip", reason="needs the openai extra: pip install -e '.[openai]'")
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=DTYPE_IDS)
@pytest.mark.parametrize(("method", "kwargs"), METHODS, ids=IDS)
def test_every_baseline_matches_float32(method, kwargs, dtype):
    model = make_clip(2)
    torch.manual_seed(3)
    x, refs = torch.randn(2, 3, 32, 32), torch.randn(3, 16)
    ref = method(cg.ImageTextSimilarity(model, text_embeds=refs), **kwargs).attribute(x)
    low = model.to(dtype)
    got = method(cg.ImageTextSimilarity(low, text_embeds=refs.to(dtype)), **kwargs).attribute(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert rel_err(got.float(), ref) <= BASELINE_BOUNDS[method][dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=DTYPE_IDS)
def test_metrics_match_float32(dtype):
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
        torch.testing.assert_close(got[key].float(), ref[key].float(), rtol=0, atol=METRIC_BOUNDS[key][dtype], msg=key)
