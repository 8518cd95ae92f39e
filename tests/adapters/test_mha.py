"""The nn.MultiheadAttention probe: an exact recomputation that exposes q, k, v and a substitutable o."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_gradeclip.adapters.mha import mha_probe
from tests.conftest import count_hooks


def _mha(batch_first: bool, kdim: int | None = None, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    with torch.no_grad():
        mha.out_proj.bias.normal_()
        if mha.in_proj_bias is not None:
            mha.in_proj_bias.normal_()
    return mha


def _masks(kind: str, n: int, t: int):
    if kind == "none":
        return {}
    if kind == "causal_bool":
        return {"attn_mask": torch.ones(t, t, dtype=torch.bool).triu(1)}
    if kind == "causal_float":
        return {"attn_mask": torch.full((t, t), float("-inf")).triu(1)}
    if kind == "per_head":
        return {"attn_mask": torch.randn(n * 4, t, t)}
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[0, -2:] = True
    return {"key_padding_mask": pad}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["none", "causal_bool", "causal_float", "per_head", "padding"])
def test_recomputation_is_the_module_output(batch_first, kind):
    mha = _mha(batch_first)
    n, t = 3, 6
    x = torch.randn(n, t, 16)
    inp = x if batch_first else x.transpose(0, 1)
    kwargs = {"need_weights": False, **_masks(kind, n, t)}
    want = mha(inp, inp, inp, **kwargs)[0]
    with mha_probe(mha, lambda _r, o: o) as record:
        got = mha(inp, inp, inp, **kwargs)[0]
    assert torch.allclose(got, want, atol=1e-5)
    assert record.q.shape == record.k.shape == record.v.shape == record.o.shape == (n, t, 16)
    out = torch.nn.functional.linear(record.o, mha.out_proj.weight, mha.out_proj.bias)
    assert torch.allclose(out if batch_first else out.transpose(0, 1), want, atol=1e-5)
    assert count_hooks(mha) == 0


def test_cross_attention_with_other_key_width_and_one_query():
    mha = _mha(True, kdim=8)
    assert not mha._qkv_same_embed_dim
    query, memory = torch.randn(2, 1, 16), torch.randn(2, 5, 8)
    want, weights = mha(query, memory, memory)
    with mha_probe(mha, lambda _r, o: o) as record:
        got, got_weights = mha(query, memory, memory)
    assert torch.allclose(got, want, atol=1e-5) and torch.equal(got_weights, weights)
    assert record.q.shape == (2, 1, 16) and record.k.shape == (2, 5, 16) and record.o.shape == (2, 1, 16)


def test_substitute_replaces_o_in_the_forward_and_gradients_reach_it():
    mha = _mha(False)
    x = torch.randn(4, 2, 16)  # sequence-first
    leaf = {}

    def substitute(record, o):
        assert record.q is not None and o.shape == (2, 4, 16)
        leaf["o"] = o.detach().requires_grad_()
        return leaf["o"]

    with mha_probe(mha, substitute) as record:
        y = mha(x, x, x)[0]
    assert record.o is leaf["o"]
    (grad,) = torch.autograd.grad(y.sum(), leaf["o"])
    assert torch.allclose(grad, mha.out_proj.weight.sum(0).expand(2, 4, 16))  # dS/do = W_o^T dS/dy
    with mha_probe(mha, lambda _r, o: torch.zeros_like(o)):
        zeros = mha(x, x, x)[0]
    assert torch.allclose(zeros, mha.out_proj.bias.expand(4, 2, 16))


def test_unsupported_options_and_cleanup_after_an_error():
    mha = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    with pytest.raises(ValueError, match="bias_k"):
        with mha_probe(mha, lambda _r, o: o):
            pass
    plain = _mha(True)

    def boom(_record, _o):
        raise RuntimeError("boom")

    x = torch.randn(1, 3, 16)
    with pytest.raises(RuntimeError, match="boom"):
        with mha_probe(plain, boom):
            plain(x, x, x)
    assert count_hooks(plain) == 0
