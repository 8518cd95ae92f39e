"""Region-phrase alignment fine-tuning driven by Grad-ECLIP maps (the paper's application).

- :func:`noun_phrases` / :func:`shapes_noun_phrases`: phrases of a caption, with a hook for a real parser;
- :func:`phrase_maps`: signed Grad-ECLIP maps per (image, phrase);
- :func:`region_embeddings`, :func:`pooling_weights`, :func:`mask_weights`: map- or mask-weighted pooling of
  dense value-path features;
- :func:`region_phrase_loss`, :func:`clip_loss`, :func:`anchor_distance`, :func:`relation_distillation`: the losses;
- :class:`RegionPhraseFinetuner`: the training step, on a copy of the model, with an optional EMA teacher;
- :func:`region_zero_shot`: region-level zero-shot classification, for evaluation.
"""

from captum_gradeclip.finetune.phrases import PhraseParser, noun_phrases, shapes_noun_phrases
from captum_gradeclip.finetune.regions import (
    anchor_distance,
    clip_loss,
    mask_weights,
    phrase_maps,
    pooling_weights,
    region_embeddings,
    region_phrase_loss,
    region_zero_shot,
    relation_distillation,
)
from captum_gradeclip.finetune.trainer import RegionPhraseFinetuner, StepResult

__all__ = [
    "PhraseParser",
    "RegionPhraseFinetuner",
    "StepResult",
    "anchor_distance",
    "clip_loss",
    "mask_weights",
    "noun_phrases",
    "phrase_maps",
    "pooling_weights",
    "region_embeddings",
    "region_phrase_loss",
    "region_zero_shot",
    "relation_distillation",
    "shapes_noun_phrases",
]
