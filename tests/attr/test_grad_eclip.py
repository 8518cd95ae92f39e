"""Grad-ECLIP against independent oracles written here, on tiny random HF CLIPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip.attr.grad_eclip import loosened_attention
from tests.conftest import EOS, general_path, head_cos, make_clip, minmax, random_texts, rel_err

TOL = 1e-4


def image_native_oracle(model, x, text_embeds, cols, layers=1, loosened=True):
    """Sum over blocks of ReLU(sum_h lambda^h_i dS/da^h_{0,i}), by autograd on eager attention."""
    heads = model.config.vision_config.num_attention_heads
    patch = model.config.vision_config.patch_size
    out = model.vision_model(
        pixel_values=x, output_attentions=True, output_hidden_states=True, interpolate_pos_encoding=True
    )
    emb = model.visual_projection(out.pooler_output)
    scores = F.normalize(emb, dim=-1) @ F.normalize(text_embeds, dim=-1).T
    s = scores[torch.arange(len(x)), cols].sum()
    depth = len(out.attentions)
    total = 0
    for layer_idx in range(depth - layers, depth):
        grad_a = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][:, :, 0, 1:]
        layer = model.vision_model.encoder.layers[layer_idx]
        h = layer.layer_norm1(out.hidden_states[layer_idx])
        q, k = layer.self_attn.q_proj(h), layer.self_attn.k_proj(h)
        lam = minmax(head_cos(q[:, 0], k, heads)[:, :, 1:], dim=-1) if loosened else 1.0
        total = total + torch.relu((lam * grad_a).sum(1))
    return total.reshape(len(x), 1, x.shape[-2] // patch, x.shape[-1] // patch).detach()


def image_paper_oracle(model, x, text_embeds, cols, qk_source="raw"):
    """The last block recomputed with one head over all channels, as the official code does."""
    vm = model.vision_model
    patch = model.config.vision_config.patch_size
    with torch.no_grad():
        x_in = vm(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states[-2]
        layer = vm.encoder.layers[-1]
        att = layer.self_attn
        h = layer.layer_norm1(x_in)
        q, k, v = att.q_proj(h), att.k_proj(h), att.v_proj(h)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
    o = (a @ v).requires_grad_()
    y = x_in + att.out_proj(o)
    y = y + layer.mlp(layer.layer_norm2(y))
    emb = model.visual_projection(vm.post_layernorm(y[:, 0]))
    scores = F.normalize(emb, dim=-1) @ F.normalize(text_embeds, dim=-1).T
    w = torch.autograd.grad(scores[torch.arange(len(x)), cols].sum(), o)[0][:, 0]
    if qk_source == "out_proj":
        q, k = att.out_proj(q), att.out_proj(k)
    lam = minmax(F.cosine_similarity(q[:, :1], k[:, 1:], dim=-1), dim=-1)
    maps = torch.relu(lam * (v[:, 1:] * w[:, None]).sum(-1))
    return maps.reshape(len(x), 1, x.shape[-2] // patch, x.shape[-1] // patch).detach()


def text_native_oracle(model, ids, mask, image_embeds, cols, layers):
    """ReLU(sum_l sum_h lambda^{l,h}_j dS/da^{l,h}_{eos,j}), min-max per text over valid positions."""
    heads = model.config.text_config.num_attention_heads
    out = model.text_model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    emb = model.text_projection(out.pooler_output)
    scores = F.normalize(emb, dim=-1) @ F.normalize(image_embeds, dim=-1).T
    s = scores[torch.arange(len(ids)), cols].sum()
    depth = len(out.attentions)
    total = torch.zeros(ids.shape, dtype=torch.float32)
    for i in range(len(ids)):
        eos = int((ids[i] == EOS).nonzero()[0])
        for layer_idx in range(depth - layers, depth):
            grad_a = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][i, :, eos, : eos + 1]
            layer = model.text_model.encoder.layers[layer_idx]
            h = layer.layer_norm1(out.hidden_states[layer_idx][i : i + 1])
            q, k = layer.self_attn.q_proj(h), layer.self_attn.k_proj(h)
            r = head_cos(q[:, eos], k[:, : eos + 1], heads)[0]  # (H, eos+1)
            total[i, : eos + 1] += (minmax(r, dim=-1) * grad_a).sum(0).detach()
        total[i, 0] = 0
        total[i, eos:] = 0
    return torch.relu(total)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_native_image_matches_attention_gradient_oracle(seed, size):
    model = make_clip(seed)
    n, m = 1 + seed, 2 + seed
    x = torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))
    text_embeds = torch.randn(m, 16, generator=torch.Generator().manual_seed(100 + seed))
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=text_embeds))
    cols = torch.arange(n) % m
    got = explainer.attribute(x, target=cols.tolist())
    want = image_native_oracle(model, x, text_embeds, cols)
    assert got.shape == (n, 1, size[0] // 8, size[1] // 8)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


def test_native_image_two_layers_and_ablation_match_oracle():
    model = make_clip(3, vision_layers=3)
    x = torch.randn(2, 3, 32, 32)
    text_embeds = torch.randn(2, 16)
    sim = cg.ImageTextSimilarity(model, text_embeds=text_embeds)
    cols = torch.tensor([1, 0])
    got = cg.GradECLIP(sim, layers=2).attribute(x, target=[1, 0])
    assert rel_err(got, image_native_oracle(model, x, text_embeds, cols, layers=2)) <= TOL
    plain = cg.GradECLIP(sim, loosened_attention=False).attribute(x, target=[1, 0])
    assert rel_err(plain, image_native_oracle(model, x, text_embeds, cols, loosened=False)) <= TOL
    assert rel_err(plain, cg.GradECLIP(sim).attribute(x, target=[1, 0])) > 1e-2


@pytest.mark.parametrize("qk_source", ["raw", "out_proj"])
@pytest.mark.parametrize("size", [(32, 32), (48, 32)])
def test_paper_mode_matches_single_head_recomputation(qk_source, size):
    model = make_clip(5)
    x = torch.randn(3, 3, *size)
    text_embeds = torch.randn(2, 16)
    sim = cg.ImageTextSimilarity(model, text_embeds=text_embeds)
    cols = torch.tensor([0, 1, 1])
    got = cg.GradECLIP(sim, mode="paper", qk_source=qk_source).attribute(x, target=cols.tolist())
    want = image_paper_oracle(model, x, text_embeds, cols, qk_source)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    native = cg.GradECLIP(sim).attribute(x, target=cols.tolist())
    assert rel_err(got, native) > 1e-2, "paper and native modes must differ with 4 heads"


def test_modes_agree_on_a_single_head_model():
    model = make_clip(6, heads=1)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    x = torch.randn(2, 3, 32, 32)
    native = cg.GradECLIP(sim).attribute(x, target=1)
    paper = cg.GradECLIP(sim, mode="paper").attribute(x, target=1)
    assert rel_err(paper, native) <= TOL


def test_every_target_equals_per_pair_loop():
    model = make_clip(7)
    x = torch.randn(3, 3, 32, 40)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(4, 16))
    for mode in ("native", "paper"):
        explainer = cg.GradECLIP(sim, mode=mode)
        every = explainer.attribute(x)
        assert every.shape == (3, 4, 4, 5)
        for n in range(3):
            for j in range(4):
                single = explainer.attribute(x[n : n + 1], target=j)
                assert rel_err(every[n : n + 1, j : j + 1], single) <= TOL


def test_sdpa_and_eager_give_the_same_maps():
    eager = make_clip(8, attn="eager")
    sdpa = make_clip(8, attn="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    text_embeds, x = torch.randn(2, 16), torch.randn(2, 3, 32, 32)
    a = cg.GradECLIP(cg.ImageTextSimilarity(eager, text_embeds=text_embeds)).attribute(x)
    b = cg.GradECLIP(cg.ImageTextSimilarity(sdpa, text_embeds=text_embeds)).attribute(x)
    assert rel_err(b, a) <= TOL


@pytest.mark.parametrize("seed", [0, 1])
def test_text_scores_match_per_layer_oracle(seed):
    model = make_clip(seed, text_layers=3)
    ids, mask = random_texts(4, 9, seed=seed)
    image_embeds = torch.randn(3, 16)
    tsim = cg.TextImageSimilarity(model, image_embeds=image_embeds)
    cols = torch.tensor([0, 2, 1, 2])
    explainer = cg.GradECLIP(tsim)  # default: last 8 blocks, capped at the depth (3)
    assert len(explainer.blocks) == 3
    got = explainer.attribute(ids, target=cols.tolist(), additional_forward_args=(mask,))
    want = text_native_oracle(model, ids, mask, image_embeds, cols, layers=3)
    assert got.shape == ids.shape
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL
    eos = (ids == EOS).int().argmax(-1)
    assert (got[:, 0] == 0).all()
    assert (got[torch.arange(4), eos] == 0).all()
    assert (got[mask == 0] == 0).all()
    one = cg.GradECLIP(tsim, layers=1).attribute(ids, target=cols.tolist(), additional_forward_args=(mask,))
    assert rel_err(one, text_native_oracle(model, ids, mask, image_embeds, cols, layers=1)) <= TOL


def test_a_masked_token_before_eos_scores_zero_and_leaves_the_others_normalised_without_it():
    # text deletion's "pad" mode makes such holes: the masked token is neither a key of the min-max nor a word
    model = make_clip(5, text_layers=2)
    ids, mask = random_texts(3, 9, seed=7)
    ids[:, 1:7] = torch.arange(10, 16)
    ids[:, 7], ids[:, 8], mask[:] = EOS, 1, 1
    mask[:, 8] = 0
    holes = torch.tensor([2, 4, 5])
    mask[torch.arange(3), holes] = 0
    image_embeds = torch.randn(2, 16)
    tsim = cg.TextImageSimilarity(model, image_embeds=image_embeds)
    got = cg.GradECLIP(tsim).attribute(ids, target=1, additional_forward_args=(mask,))
    assert (got[torch.arange(3), holes] == 0).all()
    heads = model.config.text_config.num_attention_heads
    out = model.text_model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    emb = model.text_projection(out.pooler_output)
    s = (F.normalize(emb, dim=-1) @ F.normalize(image_embeds, dim=-1).T)[:, 1].sum()
    want = torch.zeros(ids.shape)
    for i in range(3):
        keys = mask[i, :8].nonzero()[:, 0]  # up to EOS (position 7), without the hole
        for layer_idx in range(2):
            grad_a = torch.autograd.grad(s, out.attentions[layer_idx], retain_graph=True)[0][i, :, 7, keys]
            layer = model.text_model.encoder.layers[layer_idx]
            h = layer.layer_norm1(out.hidden_states[layer_idx][i : i + 1])
            q, k = layer.self_attn.q_proj(h), layer.self_attn.k_proj(h)
            lam = minmax(head_cos(q[:, 7], k[:, keys], heads)[0], dim=-1)
            want[i, keys] += (lam * grad_a).sum(0).detach()
    want[:, 0] = want[:, 7] = 0
    want = torch.relu(want)
    assert want.abs().max() > 0
    assert rel_err(got, want) <= TOL


def test_text_every_target_and_paper_mode():
    model = make_clip(4)
    ids, mask = random_texts(3, 8, seed=4)
    tsim = cg.TextImageSimilarity(model, images=torch.randn(2, 3, 32, 32))
    explainer = cg.GradECLIP(tsim)
    every = explainer.attribute(ids, additional_forward_args=(mask,))
    assert every.shape == (3, 2, 8)
    for j in range(2):
        assert rel_err(every[:, j], explainer.attribute(ids, target=j, additional_forward_args=(mask,))) <= TOL
    paper = cg.GradECLIP(tsim, mode="paper").attribute(ids, target=0, additional_forward_args=(mask,))
    assert paper.shape == (3, 8)
    assert rel_err(paper, every[:, 0]) > 1e-2


def test_legacy_eos_rule_pools_at_highest_id():
    model = make_clip(2, eos_token_id=2)
    ids = torch.tensor([[0, 5, 7, 49, 1], [0, 9, 49, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    tok = cg.GradECLIP(cg.TextImageSimilarity(model, image_embeds=torch.randn(1, 16))).attribute(
        ids, target=0, additional_forward_args=(mask,)
    )
    assert (tok[0, 3:] == 0).all() and (tok[1, 2:] == 0).all()
    assert tok[0, 1:3].abs().sum() + tok[1, 1:2].abs().sum() > 0


def test_loosened_attention_is_minmax_and_guards_constant_cosine():
    q = torch.randn(2, 8)
    k = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 0] = False
    lam = loosened_attention(q, k, heads=2, key_mask=mask)
    assert lam.shape == (2, 5, 2)
    assert torch.allclose(lam[:, 1:].amin(1), torch.zeros(2, 2))
    assert torch.allclose(lam[:, 1:].amax(1), torch.ones(2, 2))
    assert (lam[:, 0] == 0).all()
    constant = loosened_attention(q, q[:, None].expand(2, 5, 8) * 3, heads=2, key_mask=mask)
    assert torch.isfinite(constant).all() and (constant[:, 1:] == 1).all()


def test_maps_stay_on_the_inputs_device_and_work_under_no_grad():
    model = make_clip(9)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = cg.GradECLIP(sim).attribute(x, target=0)
    assert maps.device == x.device and not maps.requires_grad
    assert rel_err(maps, cg.GradECLIP(sim).attribute(x, target=0)) == 0


def test_tuple_inputs_give_tuple_outputs_and_name():
    model = make_clip(10)
    explainer = cg.GradECLIP(cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16)))
    x = torch.randn(1, 3, 32, 32)
    out = explainer.attribute((x,), target=0)
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (1, 1, 4, 4)
    assert isinstance(explainer.attribute(x, target=0), torch.Tensor)
    assert explainer.get_name() == "Grad-ECLIP"


def test_layer_argument_selects_the_block():
    model = make_clip(11, vision_layers=3)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    x, text_cols = torch.randn(2, 3, 32, 32), torch.tensor([0, 0])
    by_layer = cg.GradECLIP(sim, model.vision_model.encoder.layers[1]).attribute(x, target=0)
    by_block = cg.GradECLIP(sim, model.vision_model.encoder.layers[1].self_attn).attribute(x, target=0)
    assert torch.equal(by_layer, by_block)
    two_last = image_native_oracle(model, x, sim.reference_embeds, text_cols, layers=2)
    last = image_native_oracle(model, x, sim.reference_embeds, text_cols, layers=1)
    assert rel_err(by_layer, two_last - last) <= TOL


@pytest.mark.parametrize("mode", ["native", "paper"])
@pytest.mark.parametrize("score", ["cosine", "softmax"])
def test_fast_path_equals_general_path(mode, score):
    model = make_clip(12)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(5, 16), score=score)
    x = torch.randn(3, 3, 40, 32)
    fast = cg.GradECLIP(sim, mode=mode)
    general = general_path(sim, mode=mode)
    for target in (None, 3, [4, 0, 2]):
        a, b = fast.attribute(x, target=target), general.attribute(x, target=target)
        assert a.shape == b.shape
        assert b.abs().max() > 0
        assert rel_err(a, b) <= TOL


def test_fast_path_runs_the_last_mlp_on_the_pooled_row_only():
    model = make_clip(13)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    seen = []
    handle = model.vision_model.encoder.layers[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    try:
        cg.GradECLIP(sim).attribute(torch.randn(2, 3, 32, 32))
        assert seen == [torch.Size([2, 32])]
        seen.clear()
        general = general_path(sim)
        general.attribute(torch.randn(2, 3, 32, 32))
        assert seen == [torch.Size([2, 17, 32])]
    finally:
        handle.remove()


def test_more_targets_than_embedding_dims_use_the_jacobian_and_agree():
    model = make_clip(14)  # embeddings have 16 dimensions; 20 texts take the Jacobian route
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(20, 16), score="softmax")
    x = torch.randn(2, 3, 32, 32)
    every = cg.GradECLIP(sim).attribute(x)
    general = general_path(sim)
    assert every.shape == (2, 20, 4, 4)
    assert rel_err(every, general.attribute(x)) <= TOL


def test_relu_false_returns_the_signed_sum():
    model = make_clip(3, vision_layers=3)
    x = torch.randn(3, 3, 32, 32)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(2, 16))
    signed = cg.GradECLIP(sim, relu_attributions=False).attribute(x, target=[1, 0, 1])
    assert signed.min() < 0 < signed.max(), "the signed sum keeps both signs"
    assert rel_err(torch.relu(signed), cg.GradECLIP(sim).attribute(x, target=[1, 0, 1])) <= TOL
    # over two blocks the default sums ReLU(map_l); the signed option sums map_l itself
    per_block = [
        cg.GradECLIP(sim, relu_attributions=False, layer=sim.explained_blocks()[i]).attribute(x, target=0)
        for i in (1, 2)
    ]
    two = cg.GradECLIP(sim, relu_attributions=False, layers=2).attribute(x, target=0)
    assert rel_err(two, per_block[0] + per_block[1]) <= TOL
    ids, mask = random_texts(3, 8, seed=4)
    tsim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16))
    tok = cg.GradECLIP(tsim, relu_attributions=False).attribute(ids, target=0, additional_forward_args=(mask,))
    assert tok.min() < 0
    default = cg.GradECLIP(tsim).attribute(ids, target=0, additional_forward_args=(mask,))
    assert rel_err(torch.relu(tok), default) <= TOL


def _backward_hooks(module: torch.nn.Module, calls: list[str]) -> list:
    """Every kind of user backward hook on ``module``, each recording its calls."""
    return [
        module.register_full_backward_hook(lambda m, gi, go: calls.append("full")),
        module.register_full_backward_pre_hook(lambda m, go: calls.append("pre")),
    ]


@pytest.mark.filterwarnings("ignore:.*non-full backward hook")
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.filterwarnings("ignore:For backward hooks")
@pytest.mark.parametrize("where", ["block", "projection", "non-full on the projection", "global"])
def test_fast_path_steps_aside_for_user_backward_hooks(where):
    """A user's backward hook (which ``torch.func`` cannot run) sends the call down the general path: the same
    result as ``fast_path=False``, bit for bit, and the hook fires as it does there."""
    model = make_clip(15)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    calls: list[str] = []
    if where == "block":
        handles = _backward_hooks(sim.explained_blocks()[-1], calls)
    elif where == "projection":
        handles = _backward_hooks(model.visual_projection, calls)
    elif where == "non-full on the projection":
        handles = [model.visual_projection.register_backward_hook(lambda m, gi, go: calls.append("non-full"))]
    else:
        handles = [torch.nn.modules.module.register_module_full_backward_hook(lambda m, gi, go: calls.append("g"))]
    try:
        got = cg.GradECLIP(sim).attribute(x, target=[2, 0])
        fired = len(calls)
        expected = general_path(sim).attribute(x, target=[2, 0])
        assert fired > 0 and fired == len(calls) - fired  # the hook ran, as on the general path
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(got, expected)


def test_the_fast_path_ignores_the_package_own_probe_hooks():
    """Another thread's probe on the same block (a thread-owned hook) is no user hook: the fast path stays."""
    from captum_gradeclip.adapters import thread_owned
    from captum_gradeclip.attr.base import _hooks_the_tail_would_bypass

    model = make_clip(16)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    block = sim.explained_blocks()[-1]
    tail = sim.adapter.pooled_tail(block)
    handles = [block.register_forward_hook(thread_owned(lambda *a: None))]
    handles.append(block.register_full_backward_hook(thread_owned(lambda *a: None)))
    try:
        assert not _hooks_the_tail_would_bypass(sim, block, tail.layer)
        user = block.register_forward_hook(lambda *a: None)
        assert _hooks_the_tail_would_bypass(sim, block, tail.layer)
        user.remove()
        user = model.visual_projection.register_full_backward_hook(lambda *a: None)
        assert _hooks_the_tail_would_bypass(sim, block, tail.layer)
        user.remove()
    finally:
        for handle in handles:
            handle.remove()


def test_fast_path_steps_aside_for_a_global_forward_hook_that_changes_the_block():
    """A global forward hook (``register_module_forward_hook``) that changes the explained block's output must be
    honoured as a module hook is: the same result as ``fast_path=False``."""
    model = make_clip(17)
    sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16))
    x = torch.randn(2, 3, 32, 32)
    block = sim.explained_blocks()[-1]
    plain = cg.GradECLIP(sim).attribute(x, target=[2, 0])
    calls = []

    def rescale(module, args, output):
        if module is not block:
            return None
        calls.append(module)
        return (output[0] * -3.0 + 0.5, *output[1:]) if isinstance(output, tuple) else output * -3.0 + 0.5

    handle = torch.nn.modules.module.register_module_forward_hook(rescale)
    try:
        fast = cg.GradECLIP(sim).attribute(x, target=[2, 0])
        fired = len(calls)
        general = general_path(sim).attribute(x, target=[2, 0])
    finally:
        handle.remove()
    torch.testing.assert_close(fast, general)
    assert not torch.allclose(fast, plain), "the hook does change the explanation"
    assert fired > 0 and len(calls) == 2 * fired, "the hook ran, as on the general path"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", ["image-native", "image-paper", "text"])
def test_low_precision_map_arithmetic_runs_in_float32(case, dtype, monkeypatch):
    """The map's own arithmetic (the loosened attention's cosines and min-max, the weighted sum over channels) is
    upcast to float32 for a bf16 or fp16 model; only the result is cast back to the model's dtype. Observed
    directly: the dtypes that reach ``loosened_attention`` and that each block's map is computed in."""
    from captum_gradeclip.attr import grad_eclip

    seen: list[tuple[str, torch.dtype]] = []
    loosened, layer_map = grad_eclip.loosened_attention, grad_eclip.GradECLIP._layer_map

    def spy_loosened(q_query, k, heads, key_mask):
        seen.extend([("q", q_query.dtype), ("k", k.dtype)])
        return loosened(q_query, k, heads, key_mask)

    def spy_layer_map(self, record, w, ctx):
        out = layer_map(self, record, w, ctx)
        seen.extend([("v", record.v.dtype), ("map", out.dtype)])
        return out

    monkeypatch.setattr(grad_eclip, "loosened_attention", spy_loosened)
    monkeypatch.setattr(grad_eclip.GradECLIP, "_layer_map", spy_layer_map)
    model = make_clip(3).to(dtype)
    if case == "text":
        ids, mask = random_texts(2, 6)
        sim = cg.TextImageSimilarity(model, image_embeds=torch.randn(2, 16, dtype=dtype))
        got = cg.GradECLIP(sim, layers=2).attribute(ids, target=1, additional_forward_args=(mask,))
    else:
        sim = cg.ImageTextSimilarity(model, text_embeds=torch.randn(3, 16, dtype=dtype))
        got = cg.GradECLIP(sim, mode=case.split("-")[1]).attribute(torch.randn(2, 3, 32, 32, dtype=dtype), target=1)
    assert got.dtype == dtype and bool(torch.isfinite(got).all())
    names = [name for name, _ in seen]
    assert names.count("q") >= 1 and names.count("map") == (2 if case == "text" else 1)
    assert seen == [(name, dtype if name == "v" else torch.float32) for name in names], seen
