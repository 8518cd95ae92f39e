"""captum-gradeclip: Grad-ECLIP explanations of CLIP image-text similarity, as a Captum plugin.

Public API::

    import captum_gradeclip as cg
    sim = cg.ImageTextSimilarity(model, text_embeds=T)     # (N, M) scores of images vs texts
    maps = cg.GradECLIP(sim).attribute(pixel_values, target=0)   # (N, 1, h, w)
    tsim = cg.TextImageSimilarity(model, image_embeds=E)   # (N_txt, M) scores of texts vs images
    tok = cg.GradECLIP(tsim).attribute(input_ids, target=0, additional_forward_args=(mask,))
    cg.to_hwc(maps[0], size=(H, W))                         # for captum's visualize_image_attr
    loaded = cg.load("hf:openai/clip-vit-base-patch16")     # model, processor, adapter and processing role
    cg.to_original(maps, photo, processor)                   # maps on the original photo, NaN where unseen
    cg.words(tokens, tok[0])                                # merge BPE pieces into words
    cg.metrics.image_deletion(sim, pixel_values, maps, target=0).auc   # faithfulness and localisation metrics
    cg.baselines.GAME(sim).attribute(pixel_values, target=0)         # the baselines, same API and shapes
    cg.finetune.RegionPhraseFinetuner(model, processor).step(pixel_values, captions)  # region-phrase fine-tuning
    cg.analysis.analyze_words(model, processor, images, captions).by_tag  # word importance per word class
    model, processor = cg.zoo.load_shapes_clip()             # the embedded ShapesCLIP, offline

The names are imported on first use (PEP 562), so that ``import captum_gradeclip`` and the command line's
``--help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_NAMES = {
    "AttentionAttribution": "captum_gradeclip.attr",
    "GradECLIP": "captum_gradeclip.attr",
    "ImageClassification": "captum_gradeclip.wrappers",
    "ImageTextSimilarity": "captum_gradeclip.wrappers",
    "SimilarityAttribution": "captum_gradeclip.attr",
    "SimilarityWrapper": "captum_gradeclip.wrappers",
    "TextImageSimilarity": "captum_gradeclip.wrappers",
    "explain_dataset": "captum_gradeclip.runs",
    "get_adapter": "captum_gradeclip.adapters",
    "load": "captum_gradeclip.loading",
    "seen_image": "captum_gradeclip.viz",
    "to_original": "captum_gradeclip.viz",
    "to_hwc": "captum_gradeclip.viz",
    "words": "captum_gradeclip.vocabulary",
}
_SUBMODULES = ("analysis", "baselines", "finetune", "methods", "metrics", "results", "zoo")

__all__ = [
    "AttentionAttribution",
    "GradECLIP",
    "ImageClassification",
    "ImageTextSimilarity",
    "SimilarityAttribution",
    "SimilarityWrapper",
    "TextImageSimilarity",
    "__version__",
    "analysis",
    "baselines",
    "explain_dataset",
    "finetune",
    "get_adapter",
    "load",
    "methods",
    "metrics",
    "results",
    "seen_image",
    "to_hwc",
    "to_original",
    "words",
    "zoo",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from captum_gradeclip import analysis, baselines, finetune, methods, metrics, results, zoo
    from captum_gradeclip.adapters import get_adapter
    from captum_gradeclip.attr import AttentionAttribution, GradECLIP, SimilarityAttribution
    from captum_gradeclip.loading import load
    from captum_gradeclip.runs import explain_dataset
    from captum_gradeclip.viz import seen_image, to_hwc, to_original
    from captum_gradeclip.vocabulary import words
    from captum_gradeclip.wrappers import (
        ImageClassification,
        ImageTextSimilarity,
        SimilarityWrapper,
        TextImageSimilarity,
    )


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only (``dir(cg)``, tab completion): not this module's own imports."""
    return sorted(__all__)
