"""Quickstart: Grad-ECLIP beside Captum's own methods, on one wrapper.

Run: ``python tutorials/quickstart.py`` (writes ``quickstart.png``). It uses a tiny
random HF CLIP because no model hub is reachable; with the hub, replace
``tiny_random_clip`` by ``CLIPModel.from_pretrained("openai/clip-vit-base-patch16")``
and its ``CLIPProcessor``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients, LayerAttribution
from captum.attr import visualization as viz
from captum.metrics import sensitivity_max

import captum_gradeclip as cg
from captum_gradeclip.demo import demo_image, tiny_random_clip

texts = ["a woman in a navy uniform", "a flag"]
model, tokenizer = tiny_random_clip(" ".join(texts).split())
image = demo_image()
pixels = (torch.from_numpy(image).permute(2, 0, 1)[None] - 0.5) / 0.25

# 1. A similarity wrapper turns the CLIP into a module Captum can attribute: (N images) -> (N, M texts).
sim = cg.ImageTextSimilarity(model, texts, tokenizer=tokenizer)
print("scores", sim(pixels).detach())

# 2. Grad-ECLIP maps, one per text, and the same for Captum's Integrated Gradients.
maps = cg.GradECLIP(sim).attribute(pixels)  # (1, 2, h, w)
ig = IntegratedGradients(sim).attribute(pixels, target=0, n_steps=16).sum(1, keepdim=True)

# 3. Captum's metric runs on our attribute function unchanged.
print("sensitivity_max", sensitivity_max(cg.GradECLIP(sim).attribute, pixels, target=0, n_perturb_samples=4))

fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, attr, title in [
    (axes[0], maps[0, 0], f"Grad-ECLIP: {texts[0]}"),
    (axes[1], maps[0, 1], f"Grad-ECLIP: {texts[1]}"),
    (axes[2], LayerAttribution.interpolate(ig, image.shape[:2])[0, 0], "Integrated Gradients"),
]:
    viz.visualize_image_attr(
        cg.to_hwc(attr, size=image.shape[:2]), image, "blended_heat_map", sign="absolute_value",
        plt_fig_axis=(fig, ax), use_pyplot=False, title=title,
    )  # fmt: skip
fig.savefig("quickstart.png", dpi=90)
print("wrote quickstart.png")
