"""fp16 and bf16 models and inputs, against float32."""

from __future__ import annotations

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip.attr.grad_eclip import GradECLIP
from tests.conftest import make_clip, random_texts, rel_err


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
@pytest.mark.parametrize("mode", ["native", "paper"])
def test_low_precision_maps_match_float32(dtype, tol, mode):
    x, text_embeds = torch.randn(2, 3, 32, 32), torch.randn(3, 16)
    ref = cg.GradECLIP(cg.ImageTextSimilarity(make_clip(0), text_embeds=text_embeds), mode=mode).attribute(x)
    low = make_clip(0).to(dtype)
    got = cg.GradECLIP(cg.ImageTextSimilarity(low, text_embeds=text_embeds.to(dtype)), mode=mode).attribute(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert rel_err(got.float(), ref) <= tol

    ids, mask = random_texts(2, 7)
    image_embeds = torch.randn(1, 16)
    ref_t = cg.GradECLIP(cg.TextImageSimilarity(make_clip(0), image_embeds=image_embeds)).attribute(
        ids, target=0, additional_forward_args=(mask,)
    )
    got_t = cg.GradECLIP(cg.TextImageSimilarity(low, image_embeds=image_embeds.to(dtype))).attribute(
        ids, target=0, additional_forward_args=(mask,)
    )
    assert got_t.dtype == dtype and rel_err(got_t.float(), ref_t) <= 5 * tol


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
