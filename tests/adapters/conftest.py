"""Tiny, randomly initialised models of every supported loader, and oracles written independently of the package.

The oracles recompute the explained blocks from the models' parameters, keep the
attention probabilities in the graph, and take autograd gradients with respect to
them: in native mode, Grad-ECLIP's ``w^h . v^h_i`` equals ``dS/da^h_{0,i}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import general_path, head_cos, make_clip, random_texts

VOCAB = 50
SOT, EOT = VOCAB - 2, VOCAB - 1  # OpenAI format: the end-of-text token has the highest id
CONTEXT = 10
EMBED = 16


def sharpen_qk(model: nn.Module, factor: float = 3.0) -> None:
    """Scales the q and k in-projections, so that attention is far from uniform and heads differ."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                c = module.embed_dim
                module.in_proj_weight[: 2 * c].mul_(factor)
            elif type(module).__name__ == "AttentionPool2d":
                module.q_proj.weight.mul_(factor)
                module.k_proj.weight.mul_(factor)


def make_openai_clip(seed: int = 0, resnet: bool = False, image_size: int | None = None) -> nn.Module:
    """A tiny ``clip.model.CLIP``: ViT (width 128, 2 heads, 2 blocks, 32x32, patch 8) or ResNet (4 heads, 96x96)."""
    from clip.model import CLIP

    torch.manual_seed(seed)
    if resnet:
        # ModifiedResNet of width 8: 256-wide features and width * 32 // 64 = 4 pool heads
        model = CLIP(EMBED, image_size or 96, (1, 1, 1, 1), 8, None, CONTEXT, VOCAB, 64, 4, 2)
    else:
        model = CLIP(EMBED, image_size or 32, 2, 128, 8, CONTEXT, VOCAB, 64, 4, 2)
    sharpen_qk(model)
    return model.eval()


def make_open_clip(
    seed: int = 0,
    resnet: bool = False,
    batch_first: bool = True,
    layer_scale: float | None = None,
    custom_text: bool = False,
    **text,
) -> nn.Module:
    """A tiny ``open_clip.CLIP`` (same sizes as :func:`make_openai_clip`); ``batch_first=False`` flips the layout.

    ``custom_text=True`` builds a ``CustomTextCLIP`` (the text tower in ``model.text``).
    """
    import open_clip

    torch.manual_seed(seed)
    if resnet:
        vision = dict(layers=(1, 1, 1, 1), width=8, image_size=96, head_width=64)
    else:
        vision = dict(layers=2, width=128, head_width=64, patch_size=8, image_size=32, ls_init_value=layer_scale)
    text_cfg = dict(context_length=CONTEXT, vocab_size=VOCAB, width=64, heads=4, layers=2, ls_init_value=layer_scale)
    text_cfg.update(text)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    model = cls(EMBED, vision_cfg=vision, text_cfg=text_cfg, quick_gelu=True)
    sharpen_qk(model)
    if not batch_first:
        text_transformer = model.text.transformer if custom_text else model.transformer
        for transformer in (text_transformer, getattr(model.visual, "transformer", None)):
            if transformer is None:
                continue
            transformer.batch_first = False
            for block in transformer.resblocks:
                block.attn.batch_first = False
    return model.eval()


def openai_texts(n: int, seed: int = 0, length: int = CONTEXT) -> torch.Tensor:
    """OpenAI-format ids: SOT, 1..length-2 words, EOT (the highest id), then zeros."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        words = int(torch.randint(1, length - 1, (1,), generator=g))
        ids[i, 0] = SOT
        ids[i, 1 : words + 1] = torch.randint(1, SOT, (words,), generator=g)
        ids[i, words + 1] = EOT
    return ids


def openai_to_hf(model: nn.Module) -> nn.Module:
    """The same weights in a transformers ``CLIPModel`` (QuickGELU, legacy EOS rule), by a key mapping."""
    from transformers import CLIPConfig, CLIPModel

    v, sd = model.visual, model.state_dict()
    vision_blocks, text_blocks = v.transformer.resblocks, model.transformer.resblocks
    vw, tw = v.conv1.out_channels, model.ln_final.weight.shape[0]
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=model.vocab_size,
            hidden_size=tw,
            intermediate_size=4 * tw,
            num_hidden_layers=len(text_blocks),
            num_attention_heads=text_blocks[0].attn.num_heads,
            max_position_embeddings=model.context_length,
            hidden_act="quick_gelu",
            bos_token_id=0,
            pad_token_id=0,
            eos_token_id=2,  # the legacy rule: pool at the highest id, as OpenAI does
        ),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=len(vision_blocks),
            num_attention_heads=vision_blocks[0].attn.num_heads,
            image_size=v.input_resolution,
            patch_size=v.conv1.kernel_size[0],
            hidden_act="quick_gelu",
        ),
        projection_dim=v.proj.shape[1],
    )
    hf = CLIPModel._from_config(cfg, attn_implementation="eager")
    new = {
        "logit_scale": sd["logit_scale"],
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "visual_projection.weight": sd["visual.proj"].T,
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_projection.weight": sd["text_projection"].T,
    }
    for ours, theirs in (
        ("vision_model.pre_layrnorm", "visual.ln_pre"),
        ("vision_model.post_layernorm", "visual.ln_post"),
        ("text_model.final_layer_norm", "ln_final"),
    ):
        for p in ("weight", "bias"):
            new[f"{ours}.{p}"] = sd[f"{theirs}.{p}"]
    for tower, prefix, blocks in (
        ("vision_model", "visual.transformer", vision_blocks),
        ("text_model", "transformer", text_blocks),
    ):
        for i in range(len(blocks)):
            src, dst = f"{prefix}.resblocks.{i}", f"{tower}.encoder.layers.{i}"
            for p in ("weight", "bias"):
                for name, chunk in zip("qkv", sd[f"{src}.attn.in_proj_{p}"].chunk(3), strict=True):
                    new[f"{dst}.self_attn.{name}_proj.{p}"] = chunk
                new[f"{dst}.self_attn.out_proj.{p}"] = sd[f"{src}.attn.out_proj.{p}"]
                new[f"{dst}.layer_norm1.{p}"] = sd[f"{src}.ln_1.{p}"]
                new[f"{dst}.layer_norm2.{p}"] = sd[f"{src}.ln_2.{p}"]
                new[f"{dst}.mlp.fc1.{p}"] = sd[f"{src}.mlp.c_fc.{p}"]
                new[f"{dst}.mlp.fc2.{p}"] = sd[f"{src}.mlp.c_proj.{p}"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    return hf.eval()


def make_siglip(seed: int = 0, heads: int = 4, image_size: int = 32):
    from transformers import SiglipConfig, SiglipModel

    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=heads,
            max_position_embeddings=16,
            pad_token_id=1,
            eos_token_id=1,
            bos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=8,
        ),
    )
    torch.manual_seed(seed)
    model = SiglipModel._from_config(cfg, attn_implementation="eager")
    _sharpen_hf(model)
    sharpen_qk(model)
    return model.eval()


def make_blip(seed: int = 0):
    from transformers import BlipConfig, BlipForImageTextRetrieval

    cfg = BlipConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            encoder_hidden_size=32,
            pad_token_id=0,
            sep_token_id=3,
            bos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        image_text_hidden_size=EMBED,
    )
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval._from_config(cfg, attn_implementation="eager")
    with torch.no_grad():  # BLIP's vision init is nearly zero (initializer_range 1e-10): use PyTorch's defaults
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                module.reset_parameters()
        embeddings = model.vision_model.embeddings
        for p in (embeddings.class_embedding, embeddings.position_embedding):
            p.normal_(0.0, 0.5)
        for name, p in model.named_parameters():
            if name.endswith(("self.query.weight", "self.key.weight")):
                p.mul_(4.0)
            elif name.endswith("self_attn.qkv.weight"):
                p[: 2 * 32].mul_(4.0)
    return model.eval()


def make_vit_classifier(seed: int = 0, labels: int = 5):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_labels=labels,
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification._from_config(cfg, attn_implementation="eager")
    _sharpen_hf(model)
    return model.eval()


def openai_texts_and_mask(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`openai_texts` with the attention mask of its non-padding tokens."""
    ids = openai_texts(n, seed)
    return ids, (ids != 0).long()


def siglip_texts(n: int, seed: int = 0, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP's layout: words, no BOS; the first text ends early in EOS, which is also the padding id."""
    ids = torch.randint(2, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))
    ids[0, length - 3 :] = 1
    return ids, torch.ones_like(ids)


def blip_texts(n: int, seed: int = 0, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's layout ([CLS] words [SEP], then padding) for :func:`make_blip`'s ids."""
    cls, sep, pad = 2, 3, 0
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length), pad, dtype=torch.long)
    for i in range(n):
        words = int(torch.randint(1, length - 1, (1,), generator=g))
        ids[i, 0] = cls
        ids[i, 1 : words + 1] = torch.randint(4, VOCAB, (words,), generator=g)
        ids[i, words + 1] = sep
    return ids, (ids != pad).long()


#: The loader extras' packages (and torchvision, which open_clip needs): only these may be missing.
OPTIONAL_PACKAGES = ("open_clip", "clip", "torchvision")


@dataclass(frozen=True)
class Loader:
    """One loader's tiny random model and what a test feeds it."""

    build: Callable[[int], nn.Module]  #: seed -> the model (eval mode)
    side: int  #: the image side the model takes
    grid: tuple[int, int]  #: the token grid of an image of that side
    embed: int  #: the joint embedding size
    texts: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]  #: (n, seed) -> (input ids, attention mask)
    causal: bool = True  #: whether the text tower masks attention causally
    pad: int = 0  #: the padding id

    def load(self, seed: int) -> nn.Module:
        """The model; the test is skipped where the loader is an extra that is not installed (open_clip, clip).

        Only a missing optional package skips: any other ImportError (a broken import inside a loader) fails.
        """
        try:
            return self.build(seed)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in OPTIONAL_PACKAGES:
                raise
            pytest.skip(f"needs a loader extra, pip install -e '.[openclip,openai]': {error}")


_BIDIRECTIONAL = dict(custom_text=True, no_causal_mask=True, pool_type="last", pad_id=0)

#: Every CLIP-like loader the package adapts, tiny. The test files choose the ones they need by name.
LOADERS = {
    "hf": Loader(make_clip, 32, (4, 4), 16, lambda n, seed: random_texts(n, 7, seed), pad=1),
    "openai-vit": Loader(make_openai_clip, 32, (4, 4), EMBED, openai_texts_and_mask),
    "openai-resnet": Loader(partial(make_openai_clip, resnet=True), 96, (3, 3), EMBED, openai_texts_and_mask),
    "open_clip-vit": Loader(make_open_clip, 32, (4, 4), EMBED, openai_texts_and_mask),
    "open_clip-vit-seq-first": Loader(
        partial(make_open_clip, batch_first=False), 32, (4, 4), EMBED, openai_texts_and_mask
    ),
    "open_clip-resnet": Loader(partial(make_open_clip, resnet=True), 96, (3, 3), EMBED, openai_texts_and_mask),
    "open_clip-bidirectional": Loader(
        partial(make_open_clip, **_BIDIRECTIONAL), 32, (4, 4), EMBED, openai_texts_and_mask, causal=False
    ),
    "siglip": Loader(make_siglip, 32, (4, 4), 32, siglip_texts, causal=False, pad=1),
    "blip": Loader(make_blip, 32, (4, 4), EMBED, blip_texts, causal=False),
}


def _sharpen_hf(model: nn.Module, factor: float = 4.0) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(factor)


# -- independent oracles --------------------------------------------------------------------------


class _Seen(Exception):
    pass


def capture(module: nn.Module, run, stop: bool = False) -> torch.Tensor:
    """The first positional input of ``module`` during ``run()`` (a test-side hook, removed after).

    ``stop=True`` ends the forward pass there (for sizes the rest of the model does not accept).
    """
    seen = []

    def hook(_module, args):
        seen.append(args[0])
        if stop:
            raise _Seen

    handle = module.register_forward_pre_hook(hook)
    try:
        run()
    except _Seen:
        pass
    finally:
        handle.remove()
    return seen[0]


def mha_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None, heads: int | None = None):
    """One OpenAI/open_clip residual block, batch-first, written out; returns ``(y, probs, q, k)``.

    ``heads=1`` recomputes the attention with one head over all channels (paper mode).
    """
    attn = block.attn
    n, t, c = x.shape
    heads = heads or attn.num_heads
    d = c // heads
    h = block.ln_1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split(z):
        return z.reshape(n, t, heads, d).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-1, -2) / d**0.5
    if mask is not None:
        logits = logits + mask
    probs = torch.softmax(logits, dim=-1)
    o = (probs @ split(v)).transpose(1, 2).reshape(n, t, c)
    ls_1 = getattr(block, "ls_1", nn.Identity())
    ls_2 = getattr(block, "ls_2", nn.Identity())
    y = x + ls_1(attn.out_proj(o))
    y = y + ls_2(block.mlp(block.ln_2(y)))
    return y, probs, q, k


def run_blocks(blocks, first: int, x: torch.Tensor, mask=None, heads: int | None = None):
    """Blocks ``first..`` on batch-first ``x``; returns the output and per-block ``(probs, q, k)``."""
    seen = []
    for block in list(blocks)[first:]:
        x, probs, q, k = mha_block(block, x, mask, heads)
        seen.append((probs, q, k))
    return x, seen


def loosened_map(grad_row: torch.Tensor, q_row: torch.Tensor, k: torch.Tensor, heads: int, keys: torch.Tensor):
    """``sum_h minmax_keys(cos(q^h, k^h_i)) * dS/da^h_i`` per token ``(N, T)``; zero outside ``keys``."""
    r = head_cos(q_row, k, heads)  # (N, H, T)
    big = torch.finfo(r.dtype).max
    lo = r.masked_fill(~keys[:, None], big).amin(-1, keepdim=True)
    hi = r.masked_fill(~keys[:, None], -big).amax(-1, keepdim=True)
    lam = (r - lo) / (hi - lo)
    return ((lam * grad_row).sum(1) * keys).detach()


def cosine_scores(emb: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    return F.normalize(emb, dim=-1) @ F.normalize(refs, dim=-1).T


def openai_vit_oracle(model, x, refs, cols, layers=1, heads=None):
    """Grad-ECLIP maps of an OpenAI-format ViT at its native size, from attention-probability gradients.

    ``heads=1``: paper mode (the explained block recomputed with one head, the score from that forward).
    """
    v = model.visual
    blocks = v.transformer.resblocks
    first = len(blocks) - layers
    x_in = capture(blocks[first], lambda: model.encode_image(x))
    x_in = x_in if blocks[0].attn.batch_first else x_in.transpose(0, 1)
    y, seen = run_blocks(blocks, first, x_in, heads=heads)
    emb = v.ln_post(y[:, 0]) @ v.proj
    if heads is None:
        assert torch.allclose(emb, model.encode_image(x), atol=1e-5), "the oracle must reproduce the model"
    s = cosine_scores(emb, refs)[torch.arange(len(x)), cols].sum()
    keys = torch.ones(len(x), y.shape[1], dtype=torch.bool)
    keys[:, 0] = False
    total = 0
    for probs, q, k in seen:
        grad = torch.autograd.grad(s, probs, retain_graph=True)[0][:, :, 0]
        total = total + torch.relu(loosened_map(grad, q[:, 0], k, probs.shape[1], keys))
    side = int((y.shape[1] - 1) ** 0.5)
    return total[:, 1:].reshape(len(x), 1, side, side)


def resnet_pool_oracle(model, x, refs, cols, heads=None):
    """Grad-ECLIP on the ResNet attention pool from its probability gradients (``heads=1``: paper mode).

    Off the native size, the pool's position embedding is resized bicubically here.
    """
    pool = model.visual.attnpool
    native = x.shape[-1] == x.shape[-2] == round((pool.positional_embedding.shape[0] - 1) ** 0.5) * 32
    f = capture(pool, lambda: model.encode_image(x), stop=True)
    n, c, h, w = f.shape
    pos = pool.positional_embedding
    side = round((pos.shape[0] - 1) ** 0.5)
    grid = pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False) if (h, w) != (side, side) else grid
    pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, c)])
    t = f.reshape(n, c, h * w).permute(0, 2, 1)
    t = torch.cat([t.mean(1, keepdim=True), t], 1) + pos
    q, k, v = pool.q_proj(t[:, :1]), pool.k_proj(t), pool.v_proj(t)
    heads = heads or pool.num_heads
    d = c // heads
    qh = q.reshape(n, 1, heads, d).transpose(1, 2)
    kh, vh = (z.reshape(n, -1, heads, d).transpose(1, 2) for z in (k, v))
    probs = torch.softmax(qh @ kh.transpose(-1, -2) / d**0.5, dim=-1)  # (N, H, 1, T)
    emb = pool.c_proj((probs @ vh).transpose(1, 2).reshape(n, c))
    if native and heads == pool.num_heads:
        assert torch.allclose(emb, model.encode_image(x), atol=1e-5), "the oracle must reproduce the model"
    s = cosine_scores(emb, refs)[torch.arange(n), cols].sum()
    grad = torch.autograd.grad(s, probs)[0][:, :, 0]
    keys = torch.ones(n, t.shape[1], dtype=torch.bool)
    keys[:, 0] = False
    return torch.relu(loosened_map(grad, q[:, 0], k, heads, keys))[:, 1:].reshape(n, 1, h, w)


def openai_text_oracle(model, ids, refs, cols, layers, transformer=None, ln_final=None, projection=None):
    """Native text token scores of an OpenAI-format causal text tower (summed over blocks before the ReLU)."""
    transformer = transformer if transformer is not None else model.transformer
    blocks = transformer.resblocks
    first = len(blocks) - layers
    seq_first = not blocks[0].attn.batch_first
    x_in = capture(blocks[first], lambda: model.encode_text(ids))
    x_in = x_in.transpose(0, 1) if seq_first else x_in
    t = ids.shape[1]
    causal = torch.full((t, t), float("-inf")).triu(1)
    y, seen = run_blocks(blocks, first, x_in, causal)
    eos = ids.argmax(-1)
    rows = torch.arange(len(ids))
    ln_final = ln_final if ln_final is not None else model.ln_final
    projection = projection if projection is not None else model.text_projection
    emb = ln_final(y)[rows, eos] @ projection
    assert torch.allclose(emb, model.encode_text(ids), atol=1e-5), "the oracle must reproduce the model"
    s = cosine_scores(emb, refs)[rows, cols].sum()
    positions = torch.arange(t)
    keys = positions[None] <= eos[:, None]
    total = 0
    for probs, q, k in seen:
        grad = torch.autograd.grad(s, probs, retain_graph=True)[0][rows, :, eos]  # (N, H, T)
        total = total + loosened_map(grad, q[rows, eos], k, probs.shape[1], keys)
    words = keys & (positions[None] > 0) & (positions[None] != eos[:, None])
    return torch.relu(total) * words


# -- shared checks ------------------------------------------------------------------------------


def assert_fast_equals_general(sim, x, monkeypatch, targets=(None, 1), tol: float = 1e-4) -> None:
    """The fast path really runs (the general one would fail the test) and agrees with the general path."""
    import pytest

    import captum_gradeclip as cg
    from captum_gradeclip.attr.base import AttentionAttribution
    from tests.conftest import rel_err

    for mode in ("native", "paper"):
        fast, general = cg.GradECLIP(sim, mode=mode), general_path(sim, mode=mode)
        assert sim.adapter.pooled_tail(fast.blocks[0]) is not None
        for target in targets:
            want = general.attribute(x, target=target)
            with monkeypatch.context() as patch:
                patch.setattr(AttentionAttribution, "_run_probed", lambda *a: pytest.fail("general path taken"))
                got = fast.attribute(x, target=target)
            assert want.abs().max() > 0
            assert rel_err(got, want) <= tol


def assert_every_target_equals_per_pair(sim, inputs, mask=None, tol: float = 1e-4) -> None:
    """``target=None`` (every column at once) equals one call per (example, column) pair, in both modes."""
    import captum_gradeclip as cg
    from tests.conftest import rel_err

    for mode in ("native", "paper"):
        explainer = cg.GradECLIP(sim, mode=mode)
        every = explainer.attribute(inputs, additional_forward_args=(mask,) if mask is not None else None)
        assert every.shape[:2] == (len(inputs), sim.num_references)
        assert every.abs().max() > 0
        for n in range(len(inputs)):
            extra = (mask[n : n + 1],) if mask is not None else None
            for j in range(sim.num_references):
                one = explainer.attribute(inputs[n : n + 1], target=j, additional_forward_args=extra)
                assert rel_err(every[n : n + 1, j], one.reshape(every[n : n + 1, j].shape)) <= tol
