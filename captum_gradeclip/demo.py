"""The first thing a newcomer runs: explain one image-text pair and save the picture.

Until the embedded ShapesCLIP lands, the demo runs on a tiny randomly initialised
HF ``CLIPModel`` with a word-level tokenizer. Its heat map shows the whole
pipeline (wrapper, Grad-ECLIP, Captum's visualizer), not what a trained CLIP sees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.cbook
import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import visualization as viz
from PIL import Image

import captum_gradeclip as cg

DEMO_TEXT = "a woman in a navy uniform"
IMAGE_SIZE = 96  # a multiple of the patch size 16


def tiny_random_clip(vocab: list[str], seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A small random ``CLIPModel`` and a word-level tokenizer over ``vocab``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "<unk>", "</s>"]
    ids = {w: i for i, w in enumerate(specials + sorted(set(vocab) - set(specials)))}
    tok = Tokenizer(models.WordLevel(ids, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(ids), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=32,
            bos_token_id=ids["<s>"], pad_token_id=ids["<pad>"], eos_token_id=ids["</s>"],
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=16,
        ),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), tokenizer


def demo_image() -> np.ndarray:
    """Grace Hopper's portrait, which ships with matplotlib, as ``(H, W, 3)`` floats in [0, 1]."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(image, dtype=np.float32) / 255.0


def run(out: Path, text: str = DEMO_TEXT) -> dict:
    """Explains ``text`` against the demo image, writes a PNG to ``out``, returns the results."""
    model, tokenizer = tiny_random_clip(text.split())
    image = demo_image()
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None]
    pixels = (pixels - 0.5) / 0.25

    sim = cg.ImageTextSimilarity(model, [text], tokenizer=tokenizer)
    heat = cg.GradECLIP(sim).attribute(pixels, target=0)

    batch = tokenizer([text], return_tensors="pt")
    tsim = cg.TextImageSimilarity(model, images=pixels)
    token_scores = cg.GradECLIP(tsim).attribute(
        batch["input_ids"], target=0, additional_forward_args=(batch["attention_mask"],)
    )[0]
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    word_scores = cg.words(tokens, token_scores)

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    hwc = cg.to_hwc(heat[0], size=image.shape[:2])
    viz.visualize_image_attr(hwc, image, "original_image", plt_fig_axis=(fig, axes[0]), use_pyplot=False)
    viz.visualize_image_attr(
        hwc, image, "blended_heat_map", sign="positive",
        plt_fig_axis=(fig, axes[1]), use_pyplot=False, title="Grad-ECLIP",
    )  # fmt: skip
    caption = "  ".join(f"{w}:{s:.3f}" for w, s in word_scores)
    fig.suptitle(f'"{text}" (tiny random CLIP)\n{caption}', fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"map": heat[0, 0], "words": word_scores, "score": float(sim(pixels).detach()[0, 0]), "out": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="captum-gradeclip demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gradeclip_demo.png"), help="PNG file to write")
    parser.add_argument("--text", default=DEMO_TEXT, help="the text to explain against the image")
    args = parser.parse_args(argv)
    result = run(args.out, args.text)
    grid = result["map"]
    print(f"similarity {result['score']:.4f}; map {tuple(grid.shape)}, max {float(grid.max()):.4g}")
    print("word importances:", ", ".join(f"{w}={s:.4f}" for w, s in result["words"]))
    print(f"wrote {result['out']}")
