"""Region-phrase alignment fine-tuning with Grad-ECLIP maps (the paper's application)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captum_gradeclip.adapters import get_adapter
from captum_gradeclip.adapters.dense import value_path_tokens
from captum_gradeclip.finetune.phrases import PhraseParser, noun_phrases
from captum_gradeclip.finetune.regions import (
    anchor_distance,
    clip_loss,
    phrase_maps,
    pooling_weights,
    region_embeddings,
    region_phrase_loss,
    relation_distillation,
)
from captum_gradeclip.wrappers import ImageTextSimilarity


@dataclass
class StepResult:
    """The losses of one :meth:`RegionPhraseFinetuner.step` (floats, for logging).

    Attributes:
        loss: the total, ``clip + region_weight * region + anchor_weight * anchor
            + distill_weight * distill``.
        clip: the symmetric image-caption CLIP loss.
        region: the peak-weighted region-phrase contrastive loss.
        phrases: how many (image, phrase) pairs the step used.
        anchor: the mean cosine distance of the student's global image and text embeddings from
            the frozen model's (0 without an anchor).
        distill: the KL divergence of the student's image-text retrieval distributions over the
            batch (captions and negatives) from the frozen model's (0 without distillation).

    Examples::

        >>> tuner = RegionPhraseFinetuner(model, processor)
        >>> result = tuner.step(pixel_values.repeat(2, 1, 1, 1), [scene.caption] * 2)
        >>> result.phrases, abs(result.loss - (result.clip + result.region)) < 1e-5  # region_weight 1
        (6, True)
    """

    loss: float
    clip: float
    region: float
    phrases: int
    anchor: float = 0.0
    distill: float = 0.0


class RegionPhraseFinetuner:
    r"""Fine-tunes a COPY of a CLIP model so that regions match the phrases that name them.

    Each step, for every (image, noun phrase) pair of the batch:

    1. the signed Grad-ECLIP map of the phrase (no final ReLU), from the teacher (an EMA of
       the student, or the student itself, detached);
    2. the region embedding: the map, min-max normalised to weights, pools the student's
       dense value-path patch features (MaskCLIP style, the last block with
       :math:`o_i = v_i`);
    3. a contrastive loss pulls each region to its phrase and pushes it from the batch's other
       phrases, each pair weighted by the peak of its map (normalised to mean 1).

    It is added to the usual CLIP loss of images against captions (at the model's logit
    scale, which is kept fixed; ``step(..., negatives=...)`` adds hard-negative captions to it)
    and to two terms that keep the global behaviour of the given model, against a frozen copy
    of it: the anchor (each global image and text embedding stays near the frozen one) and the
    relation distillation (each image's softmax over the batch's captions stays near the frozen
    one). On the shipped ShapesCLIP the region loss without them costs about 3 points of
    caption recall@1 and 2 of single-object zero-shot accuracy; with them, about 1 (see
    ``docs/finetune.md``). The model given to the constructor is never changed: the finetuner
    trains ``self.model``, a deep copy.

    Args:
        model (nn.Module): a CLIP whose adapter provides dense value-path features (transformers
            ``CLIPModel``).
        tokenizer (callable): the model's processor, called as ``processor(text=texts,
            padding=True, return_tensors="pt")`` (so that a fixed text context, as open_clip's, is
            kept), or a tokenizer, called as ``tokenizer(texts, padding=True, return_tensors="pt")``.
        lr (float, optional): AdamW learning rate. Default: 1e-5.
        region_weight (float, optional): weight of the region-phrase loss. Default: 1.0.
        ema (float or None, optional): decay of the EMA teacher that draws the maps, e.g. 0.99;
            ``None`` draws them with the student. Default: None.
        parser (callable, optional): the noun-phrase hook, ``parser(caption) -> phrases``.
            Default: the shapes-world chunker.
        region_scale (float, optional): logit scale of the region-phrase loss. Default: 20.
        weight_decay (float, optional): AdamW weight decay. Default: 0.0.
        anchor_weight (float, optional): weight of the anchor term, the mean cosine distance
            :math:`1 - \cos` of the student's global image and text embeddings of the batch (images,
            captions, negatives and phrases) from those of a frozen copy of the given model. It is
            0 at the start and pulls the global embeddings back as they drift; 0 trains without
            it. Default: 10.0. ``python -m benchmarks.finetune`` uses 30: on ShapesCLIP-Deep with the
            last block's maps and 2- and 3-object scenes, 10 lost 1.8 points of recall@1 and 30 lost
            0.4 (seed 0, ``docs/finetune.md``).
        distill_weight (float, optional): weight of the relation distillation term
            (:func:`~captum_gradeclip.finetune.relation_distillation`): the student's softmax of
            each image over the batch's captions and negatives (and of each caption over the
            images) is pulled toward the frozen copy's. 0 trains without it. Default: 3.0.
        trainable (callable, optional): ``trainable(name) -> bool`` on the names of
            ``model.named_parameters()``; the others are frozen (kept bit-identical and left out
            of the optimiser). Default: every parameter trains.
        map_layers (int, optional): how many consecutive image blocks, ending at ``map_block``,
            draw the teacher's Grad-ECLIP maps (their signed maps summed, Grad-ECLIP's
            ``layers``). The region features are the last block's value path whatever the
            maps. Default: 1.
        map_block (int, optional): the last block the maps are drawn from, an index into the
            image tower's attention blocks (negative counts from the end). Default: -1, the
            last block, as in the paper. ``python -m benchmarks.finetune`` uses -2: on
            ShapesCLIP-Deep it gained the most region accuracy measured (+26 points, against +12
            with the last block's maps), with global accuracy kept on every seed
            (``docs/finetune.md``).

    Examples::

        >>> tuner = RegionPhraseFinetuner(model, processor, lr=1e-5, ema=0.99)
        >>> scenes = shapes.make_scenes(range(4), n_objects=2)
        >>> batch = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
        >>> result = tuner.step(batch, [s.caption for s in scenes])
        >>> result.phrases  # two noun phrases per caption
        8
        >>> tuned = tuner.model   # `model` itself is unchanged
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        *,
        lr: float = 1e-5,
        region_weight: float = 1.0,
        ema: float | None = None,
        parser: PhraseParser | None = None,
        region_scale: float = 20.0,
        weight_decay: float = 0.0,
        anchor_weight: float = 10.0,
        distill_weight: float = 3.0,
        trainable: Callable[[str], bool] | None = None,
        map_layers: int = 1,
        map_block: int = -1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module; got {type(model).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"`tokenizer` must be callable; got {type(tokenizer).__name__}")
        if not lr > 0:
            raise ValueError(f"`lr` must be positive; got {lr}")
        if region_weight < 0:
            raise ValueError(f"`region_weight` must be non-negative; got {region_weight}")
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError(f"`ema` must be in [0, 1) or None; got {ema}")
        if not anchor_weight >= 0:
            raise ValueError(f"`anchor_weight` must be non-negative; got {anchor_weight}")
        if not distill_weight >= 0:
            raise ValueError(f"`distill_weight` must be non-negative; got {distill_weight}")
        if trainable is not None and not callable(trainable):
            raise TypeError(f"`trainable` must be callable (parameter name -> bool); got {type(trainable).__name__}")
        blocks = get_adapter(model).attention_blocks("image")  # a clear error for an unsupported model, first
        if isinstance(map_block, bool) or not isinstance(map_block, int) or not -len(blocks) <= map_block < len(blocks):
            raise ValueError(
                f"`map_block` must be an int in [{-len(blocks)}, {len(blocks) - 1}] (an image block); got {map_block!r}"
            )
        depth = map_block % len(blocks) + 1  # the blocks up to and including map_block
        if isinstance(map_layers, bool) or not isinstance(map_layers, int) or not 1 <= map_layers <= depth:
            raise ValueError(
                f"`map_layers` must be an int in [1, {depth}] (the blocks up to `map_block`); got {map_layers!r}"
            )
        self.model = copy.deepcopy(model).train()
        # a processor is called as one (text=...): its call knows the model's text length (open_clip's fixed context)
        self.tokenizer = tokenizer
        self.region_weight = float(region_weight)
        self.region_scale = float(region_scale)
        self.ema = ema
        self.parser = parser
        self.map_layers, self.map_block = map_layers, map_block
        self.teacher: nn.Module | None = None
        if ema is not None:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.anchor_weight = float(anchor_weight)
        self.distill_weight = float(distill_weight)
        self.frozen: nn.Module | None = None
        if anchor_weight > 0 or distill_weight > 0:  # the frozen copy costs one more model in memory
            self.frozen = copy.deepcopy(self.model).eval().requires_grad_(False)
        if trainable is not None:
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(bool(trainable(name)))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("`trainable` leaves no parameter to train")
        self.adapter = get_adapter(self.model)
        # foreach: one fused update over all tensors (on the CPU, PyTorch's default is a loop over each)
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)

    def _embed_texts(self, model: nn.Module, texts: list[str]) -> Tensor:
        if hasattr(self.tokenizer, "tokenizer"):  # a processor
            batch = self.tokenizer(text=texts, padding=True, return_tensors="pt")
        else:
            batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        return get_adapter(model).embed_texts(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def step(self, pixel_values: Tensor, captions: Sequence[str], negatives: Sequence[str] | None = None) -> StepResult:
        """One optimisation step on a batch of matched images and captions.

        Args:
            pixel_values (Tensor): ``(B, C, H, W)`` normalised images.
            captions (sequence of str): ``B`` captions, one per image.
            negatives (sequence of str, optional): further captions that match no image of the
                batch (e.g. hard negatives that swap or change an attribute), added to the
                image-to-text side of the CLIP loss. Default: none.

        Returns:
            *StepResult*: the losses of this step.
        """
        if not isinstance(pixel_values, Tensor) or pixel_values.ndim != 4:
            raise TypeError("`pixel_values` must be a (B, C, H, W) tensor")
        if isinstance(captions, str) or len(captions) != len(pixel_values):
            raise ValueError(f"`captions` must be a sequence of {len(pixel_values)} str, one per image")
        negatives = [] if negatives is None else negatives
        if isinstance(negatives, str) or not all(isinstance(n, str) for n in negatives):
            raise TypeError("`negatives` must be a sequence of str")
        per_image = [noun_phrases(c, self.parser) for c in captions]
        unique = sorted({p for phrases in per_image for p in phrases})
        slots = max((len(p) for p in per_image), default=0)
        targets = torch.full((len(captions), max(slots, 1)), -1, dtype=torch.long)
        for i, phrases in enumerate(per_image):
            targets[i, : len(phrases)] = torch.tensor([unique.index(p) for p in phrases], dtype=torch.long)
        device = next(self.model.parameters()).device  # the images and phrase slots join the model, wherever held
        pixel_values, targets = pixel_values.to(device), targets.to(device)

        model = self.model.train()
        teacher = self.teacher if self.teacher is not None else model
        with torch.no_grad():
            teacher_phrases = self._embed_texts(teacher, unique) if unique else None
        maps = None
        if teacher_phrases is not None:
            similarity = ImageTextSimilarity(teacher, text_embeds=teacher_phrases)
            maps = phrase_maps(similarity, pixel_values, targets, layers=self.map_layers, block=self.map_block)

        image_embeds = self.adapter.embed_images(pixel_values, False)
        b, n = len(captions), len(negatives)
        texts = self._embed_texts(model, [*captions, *negatives, *unique])
        caption_embeds, phrase_embeds = texts[: b + n], texts[b + n :]
        global_loss = clip_loss(image_embeds, caption_embeds, self.adapter.logit_scale().detach())
        region_loss = torch.zeros((), device=global_loss.device)
        keep = targets >= 0
        if maps is not None and keep.any():
            dense = value_path_tokens(ImageTextSimilarity(model, text_embeds=phrase_embeds.detach()), pixel_values)
            regions = region_embeddings(dense, pooling_weights(maps))[keep]
            peaks = maps.flatten(2).amax(-1)[keep].clamp(min=0)
            weights = peaks / peaks.mean().clamp(min=1e-12)
            region_loss = region_phrase_loss(regions, phrase_embeds, targets[keep], weights, self.region_scale)
        anchor_loss = torch.zeros((), device=global_loss.device)
        distill_loss = torch.zeros((), device=global_loss.device)
        if self.frozen is not None:
            with torch.no_grad():
                frozen_images = get_adapter(self.frozen).embed_images(pixel_values, False)
                frozen_texts = self._embed_texts(self.frozen, [*captions, *negatives, *unique])
            anchor_loss = (anchor_distance(image_embeds, frozen_images) + anchor_distance(texts, frozen_texts)) / 2
            distill_loss = relation_distillation(
                image_embeds, caption_embeds, frozen_images, frozen_texts[: b + n], self.adapter.logit_scale().detach()
            )
        loss = global_loss + self.region_weight * region_loss
        loss = loss + self.anchor_weight * anchor_loss + self.distill_weight * distill_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.teacher is not None:
            self._update_teacher()
        return StepResult(
            float(loss.detach()),
            float(global_loss.detach()),
            float(region_loss.detach()),
            int(keep.sum()),
            float(anchor_loss.detach()),
            float(distill_loss.detach()),
        )

    @torch.no_grad()
    def _update_teacher(self) -> None:
        assert self.teacher is not None and self.ema is not None
        teacher: list[Tensor] = list(self.teacher.parameters())
        student = [p.detach() for p in self.model.parameters()]
        if len(teacher) != len(student):
            raise RuntimeError("the teacher and the student no longer have the same parameters")
        torch._foreach_lerp_(teacher, student, 1.0 - self.ema)
