"""Tiny, randomly initialised models of the real architectures, and independent oracles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging as hf_logging

import captum_gradeclip

hf_logging.set_verbosity_error()

#: True where the tests run on the package as mutmut rewrote it: its trampolines add call frames, so a warning's
#: stack level points elsewhere there (the tests that check it run outside mutmut).
UNDER_MUTMUT = "mutants" in Path(captum_gradeclip.__file__).parts
VOCAB = 50
BOS, PAD, EOS = 0, 1, 3


def general_path(sim, **options) -> captum_gradeclip.GradECLIP:
    """Grad-ECLIP on ``sim`` with its fast path switched off: the general (hooked) path, the fast path's oracle."""
    explainer = captum_gradeclip.GradECLIP(sim, **options)
    explainer.fast_path = False
    return explainer


def make_clip(
    seed: int = 0,
    attn: str = "eager",
    heads: int = 4,
    width: int = 32,
    vision_layers: int = 2,
    text_layers: int = 3,
    image_size: int = 32,
    patch_size: int = 8,
    eos_token_id: int = EOS,
) -> CLIPModel:
    """A tiny HF ``CLIPModel`` with random weights (no download)."""
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            max_position_embeddings=16,
            bos_token_id=BOS,
            pad_token_id=PAD,
            eos_token_id=eos_token_id,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=vision_layers,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel._from_config(cfg, attn_implementation=attn)
    # Sharper than the default init, so attention is far from uniform and heads differ.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)
    return model.eval()


def random_texts(n: int, length: int, seed: int = 0, eos_token_id: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with BOS, 1..length-2 words, EOS, then padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length), PAD, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        words = int(torch.randint(1, length - 1, (1,), generator=g))
        ids[i, 0] = BOS
        ids[i, 1 : words + 1] = torch.randint(4, VOCAB, (words,), generator=g)
        ids[i, words + 1] = eos_token_id
        mask[i, : words + 2] = 1
    return ids, mask


def minmax(r: torch.Tensor, dim: int) -> torch.Tensor:
    lo, hi = r.amin(dim, keepdim=True), r.amax(dim, keepdim=True)
    return (r - lo) / (hi - lo)


def head_cos(q0: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """``(N, H, T)`` cosine of the query row with every key, per head."""
    n, t, c = k.shape
    keys = k.reshape(n, t, heads, c // heads).transpose(1, 2)
    return F.cosine_similarity(q0.reshape(n, heads, 1, c // heads), keys, dim=-1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture
def clip() -> CLIPModel:
    return make_clip()


def count_hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def model_snapshot(model: torch.nn.Module) -> tuple:
    """Everything an explanation must leave unchanged: parameters and buffers, requires_grad, train/eval flags."""
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def assert_unchanged(model: torch.nn.Module, snapshot: tuple) -> None:
    """No hooks left, and the same state as :func:`model_snapshot` recorded."""
    state, flags, modes = snapshot
    assert count_hooks(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
