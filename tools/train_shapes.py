"""Trains ShapesCLIP, the embedded CLIPs, on the shapes world.

Run ``python -m tools.train_shapes --out DIR [--backbone vit|resnet]`` (see
``--help``). The run is seeded: the same seed, steps and thread count give the same weights.

- ``--backbone vit`` (default) writes a ``from_pretrained`` directory of an HF ``CLIPModel``:
  ``config.json``, ``model.safetensors`` and the processor (a ``CLIPImageProcessor`` with the
  pixel normalisation and the word-level tokenizer).
- ``--backbone resnet`` trains an open_clip ``CLIP`` with a ``ModifiedResNet`` image tower (the
  attention pool; the 64x64 scenes resized to 128x128, a 4x4 grid) and writes
  ``open_clip_config.json``, ``model.safetensors`` and a
  :class:`~captum_gradeclip.zoo.shapes_clip.ShapesProcessor` (its tokenizer gives the
  end-of-text token the highest id, where open_clip's text tower pools). Needs open_clip.

Training for binding (which colour goes with which shape), on top of CLIP's symmetric
contrastive loss:

- most scenes hold 2 or 3 objects;
- every image gets a hard-negative caption: its colours swapped between two objects, or one
  object's colour or shape changed;
- a prompt loss scores every image against all single-object prompts ("a red circle"), with
  the present objects as soft targets.

Pixels are normalised; without that the loss sits at ln(batch) and nothing is learned.

- ``--backbone vit-deep`` trains ShapesCLIP-Deep: an HF ``CLIPModel`` with 6 vision layers of width 96 whose
  processor resizes the 64x64 scenes to 112x112 (patch 8: a 14x14 grid).

Batches are rendered with torch on ``--device`` (:mod:`~captum_gradeclip.zoo.shapes_batch`, the same world
and distribution as :func:`shapes.render`) and their captions come from a table tokenized once
(:class:`CaptionTable`); ``--set renderer=numpy`` renders scene by scene in numpy, as the shipped ViT and
ResNet were trained.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm

from captum_gradeclip.zoo import shapes, shapes_batch
from captum_gradeclip.zoo.shapes_clip import (
    OPEN_CLIP_CONFIG,
    ShapesProcessor,
    build_open_clip_model,
    encode_images,
    encode_texts,
)

#: Pixel normalisation, measured on the shapes world (per channel, all channels alike).
PIXEL_MEAN = (0.43, 0.43, 0.43)
PIXEL_STD = (0.15, 0.15, 0.15)
SPECIAL_TOKENS = ("<s>", "<pad>", "<unk>", "</s>")
MAX_TEXT_LENGTH = 32
#: The ResNet model's token order: padding is 0 and the end-of-text token comes last, with the highest id
#: (open_clip's causal text tower pools at the argmax of the ids).
RESNET_TOKENS = ("<pad>", "<unk>", "<s>", *shapes.VOCABULARY, "</s>")
#: The ResNet model's text length (the longest caption, 3 objects, is 13 tokens).
RESNET_CONTEXT_LENGTH = 16
#: ``--backbone resnet``'s defaults, applied before ``--set``.
RESNET_DEFAULTS: dict = {"backbone": "resnet", "steps": 1000}
#: ``--backbone vit-deep``'s defaults (ShapesCLIP-Deep: 6 layers, the 64-pixel scenes resized to 112, a 14x14
#: grid), applied before ``--set``.
DEEP_DEFAULTS: dict = {
    "backbone": "vit",
    "steps": 2500,
    "batch_size": 64,
    "warmup": 200,
    "width": 96,
    "vision_layers": 6,
    "image_size": 112,
    "patch_size": 8,
}
PRESETS: dict[str, dict] = {"vit": {}, "resnet": RESNET_DEFAULTS, "vit-deep": DEEP_DEFAULTS}


@dataclass
class TrainConfig:
    """Model size and optimisation settings.

    The defaults, with ``renderer="numpy"``, reproduce the shipped ViT (its ``training.json`` predates the
    ``renderer`` field); :data:`RESNET_DEFAULTS` and :data:`DEEP_DEFAULTS` give the other two shipped models.
    """

    seed: int = 0
    steps: int = 1500
    batch_size: int = 96
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    width: int = 128
    vision_layers: int = 2
    text_layers: int = 2
    heads: int = 4
    patch_size: int = 8
    image_size: int = shapes.IMAGE_SIZE
    projection_dim: int = 64
    object_weights: tuple[float, float, float] = (0.3, 0.5, 0.2)
    prompt_loss_weight: float = 1.0
    #: ``"vit"`` (an HF ``CLIPModel``) or ``"resnet"`` (an open_clip ``CLIP`` with a ``ModifiedResNet``).
    backbone: str = "vit"
    #: ResNet only: blocks per stage, stem width (the last stage has 32x as many channels) and input side.
    resnet_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    resnet_width: int = 16
    resnet_image_size: int = 128
    resnet_head_width: int = 32
    #: The side of the rendered scenes; the processor resizes them to the model's ``image_size``.
    scene_size: int = shapes.IMAGE_SIZE
    #: ``"torch"``: batches rendered on the training device (:mod:`~captum_gradeclip.zoo.shapes_batch`) and
    #: captions tokenized once; ``"numpy"``: scene by scene with :func:`shapes.render`, as the shipped ViT
    #: and ResNet were trained (their ``training.json`` predates this field).
    renderer: str = "torch"


def build_tokenizer(backbone: str = "vit") -> object:
    """A word-level ``PreTrainedTokenizerFast`` over :data:`shapes.VOCABULARY` (lower-cased, ``<s> ... </s>``).

    For ``backbone="resnet"`` the ids follow :data:`RESNET_TOKENS` (``</s>`` highest, ``<pad>`` 0) and
    the length is :data:`RESNET_CONTEXT_LENGTH`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    order = RESNET_TOKENS if backbone == "resnet" else (*SPECIAL_TOKENS, *shapes.VOCABULARY)
    ids = {w: i for i, w in enumerate(order)}
    tok = Tokenizer(models.WordLevel(ids, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=RESNET_CONTEXT_LENGTH if backbone == "resnet" else MAX_TEXT_LENGTH,
    )


def build_processor(image_size: int = shapes.IMAGE_SIZE, backbone: str = "vit") -> object:
    """A ``CLIPProcessor`` (``"vit"``) or a ``ShapesProcessor`` (``"resnet"``, resizing to ``image_size``):
    the shapes-world pixel normalisation and :func:`build_tokenizer`."""
    if backbone == "resnet":
        return ShapesProcessor(
            build_tokenizer("resnet"), image_size, PIXEL_MEAN, PIXEL_STD, context_length=RESNET_CONTEXT_LENGTH
        )
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(PIXEL_MEAN),
        image_std=list(PIXEL_STD),
        resample=2,  # bilinear: what the trainer's torch resize (:func:`normalise`) reproduces
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer())


def open_clip_config(config: TrainConfig) -> dict:
    """The ``open_clip.model.CLIP`` keyword arguments of the ResNet model (saved as ``open_clip_config.json``)."""
    return {
        "embed_dim": config.projection_dim,
        "vision_cfg": {
            "layers": list(config.resnet_layers),
            "width": config.resnet_width,
            "head_width": config.resnet_head_width,
            "image_size": config.resnet_image_size,
        },
        "text_cfg": {
            "context_length": RESNET_CONTEXT_LENGTH,
            "vocab_size": len(RESNET_TOKENS),
            "width": config.width,
            "heads": config.heads,
            "layers": config.text_layers,
            "pad_id": RESNET_TOKENS.index("<pad>"),
        },
    }


def build_model(config: TrainConfig) -> torch.nn.Module:
    """A randomly initialised model of the configured size (seeded by ``config.seed``).

    An HF ``CLIPModel`` for ``backbone="vit"``, an open_clip ``CLIP`` with a ``ModifiedResNet`` for ``"resnet"``.
    """
    if config.backbone == "resnet":
        torch.manual_seed(config.seed)
        return build_open_clip_model(open_clip_config(config))
    if config.backbone != "vit":
        raise ValueError(f"`backbone` must be 'vit' or 'resnet'; got {config.backbone!r}")
    from transformers import CLIPConfig, CLIPModel

    vocab = len(SPECIAL_TOKENS) + len(shapes.VOCABULARY)
    clip_config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=config.width,
            intermediate_size=4 * config.width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.heads,
            max_position_embeddings=MAX_TEXT_LENGTH,
            bos_token_id=SPECIAL_TOKENS.index("<s>"),
            pad_token_id=SPECIAL_TOKENS.index("<pad>"),
            eos_token_id=SPECIAL_TOKENS.index("</s>"),
        ),
        vision_config=dict(
            hidden_size=config.width,
            intermediate_size=4 * config.width,
            num_hidden_layers=config.vision_layers,
            num_attention_heads=config.heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
        ),
        projection_dim=config.projection_dim,
    )
    torch.manual_seed(config.seed)
    return CLIPModel(clip_config)


def hard_negative(objects: list[shapes.ShapeObject], rng: np.random.Generator) -> str:
    """A caption that differs from the scene's in binding only: swapped colours, or one changed attribute."""
    return shapes.caption(negative_pairs([(o.colour, o.shape) for o in objects], rng))


def negative_pairs(pairs: list[tuple[str, str]], rng: np.random.Generator) -> list[tuple[str, str]]:
    """The ``(colour, shape)`` pairs of :func:`hard_negative`'s caption, in caption order."""
    pairs = list(pairs)
    swaps = [
        (i, j)
        for i in range(len(pairs))
        for j in range(i + 1, len(pairs))
        if pairs[i][0] != pairs[j][0] and pairs[i][1] != pairs[j][1]
    ]
    if swaps and rng.random() < 0.6:
        i, j = swaps[int(rng.integers(len(swaps)))]
        pairs[i], pairs[j] = (pairs[j][0], pairs[i][1]), (pairs[i][0], pairs[j][1])
        return pairs
    k = int(rng.integers(len(pairs)))
    colour, shape = pairs[k]
    if rng.random() < 0.5:  # change the colour, preferably to one used by another object (binding)
        others = [c for c, _ in pairs if c != colour and (c, shape) not in pairs] or [
            c for c in shapes.COLOURS if c != colour and (c, shape) not in pairs
        ]
        pairs[k] = (others[int(rng.integers(len(others)))], shape)
    else:
        others = [s for _, s in pairs if s != shape and (colour, s) not in pairs] or [
            s for s in shapes.SHAPES if s != shape and (colour, s) not in pairs
        ]
        pairs[k] = (colour, others[int(rng.integers(len(others)))])
    return pairs


def sample_batch(
    rng: np.random.Generator,
    config: TrainConfig,
    prompt_index: dict[str, int],
    pixels: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[str], list[str], torch.Tensor]:
    """The numpy renderer's batch: images ``(B, 3, H, W)`` normalised, captions, hard negatives and
    ``(B, P)`` prompt targets.

    ``pixels`` turns the ``(B, S, S, 3)`` uint8 scenes into pixel values (default: :func:`normalise` to
    ``config.image_size``).
    """
    counts = rng.choice(3, size=config.batch_size, p=config.object_weights) + 1
    images, captions, negatives = [], [], []
    targets = torch.zeros(config.batch_size, len(prompt_index))
    for b, n in enumerate(counts):
        array, objects = shapes.render(rng, int(n), config.scene_size)
        images.append(array)
        captions.append(shapes.caption([(o.colour, o.shape) for o in objects]))
        negatives.append(hard_negative(objects, rng))
        for o in objects:
            targets[b, prompt_index[o.prompt]] = 1.0 / len(objects)
    if pixels is None:
        return normalise(np.stack(images), config.image_size), captions, negatives, targets
    return pixels(np.stack(images)), captions, negatives, targets


#: Every ``(colour, shape)`` pair, in :func:`shapes.all_prompts` order.
PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in shapes.COLOURS for s in shapes.SHAPES)


class CaptionTable:
    """Every caption of 1 to :data:`shapes.MAX_OBJECTS` distinct objects, tokenized once by ``processor``.

    ``table(pairs)`` gives the ``input_ids`` and ``attention_mask`` of the captions of ``(B, MAX_OBJECTS)``
    pair indices (-1 past the last object): the rows the processor gives for those captions, padded to
    the longest caption.

    Args:
        processor: the model's processor (its tokenizer is called once, on all captions).
        device (torch.device or str, optional): where the table lives. Default: ``"cpu"``.
    """

    def __init__(self, processor: object, device: torch.device | str = "cpu") -> None:
        n = len(PAIRS)
        captions = [
            shapes.caption([PAIRS[i] for i in combo])
            for k in range(1, shapes.MAX_OBJECTS + 1)
            for combo in itertools.product(range(n), repeat=k)
        ]
        batch = processor(text=captions, padding=True, return_tensors="pt")  # type: ignore[operator]
        self.input_ids = batch["input_ids"].to(device)
        self.attention_mask = batch["attention_mask"].to(device)
        starts = [sum(n**j for j in range(1, k + 1)) for k in range(shapes.MAX_OBJECTS)]
        self.offsets = torch.tensor(starts, device=device)
        self.size = n

    def rows(self, pairs: torch.Tensor) -> torch.Tensor:
        """The table's row of each caption: ``(B,)`` from ``(B, MAX_OBJECTS)`` pair indices."""
        counts = (pairs >= 0).sum(dim=1)
        index = torch.zeros_like(counts)
        for k in range(pairs.shape[1]):
            index = torch.where(counts > k, index * self.size + pairs[:, k], index)
        return self.offsets[counts - 1] + index

    def __call__(self, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = self.rows(pairs)
        return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows]}


def sample_batch_torch(
    rng: np.random.Generator,
    generator: torch.Generator,
    config: TrainConfig,
    table: CaptionTable,
    pixels: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The torch renderer's batch, on ``generator.device``.

    Returns:
        *tuple*: pixel values ``(B, 3, H, W)``, the pair indices of the captions ``(B, MAX_OBJECTS)``
        and of their hard negatives (as :func:`negative_pairs` draws them), and ``(B, P)`` prompt targets.
    """
    counts = rng.choice(3, size=config.batch_size, p=config.object_weights) + 1
    pairs = shapes_batch.sample_pairs(counts, rng)
    negatives = np.full_like(pairs, -1)
    index = {pair: i for i, pair in enumerate(PAIRS)}
    for b, n in enumerate(counts):
        negatives[b, :n] = [index[p] for p in negative_pairs([PAIRS[i] for i in pairs[b, :n]], rng)]
    scenes = shapes_batch.render_batch(pairs, generator, config.scene_size)
    present = scenes.pairs >= 0
    targets = (F.one_hot(scenes.pairs.clamp(min=0), table.size) * present[..., None]).sum(dim=1).float()
    targets = targets / scenes.counts[:, None]
    return pixels(scenes.images), scenes.pairs, torch.as_tensor(negatives, device=generator.device), targets


def normalise(images: np.ndarray | torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Scenes -> pixel values ``(B, 3, S, S)``, as the saved ``CLIPImageProcessor`` makes them.

    Args:
        images: ``(B, H, W, 3)`` uint8 arrays, or a ``(B, 3, H, W)`` uint8 tensor (kept on its device).
        size (int, optional): the model's side ``S``; other sizes are resized bilinearly and rounded to
            grey levels (the processor resizes the 8-bit image: the two agree within one grey level).
            Default: the images' own side.
    """
    x = torch.from_numpy(images).permute(0, 3, 1, 2) if isinstance(images, np.ndarray) else images
    x = x.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).round()
    mean = torch.tensor(PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def batch_source(
    config: TrainConfig, processor: object, device: str | torch.device = "cpu"
) -> Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]:
    """The training batches of ``config``, one per call, as :func:`train` draws them.

    Args:
        config (TrainConfig): sizes, seed and ``renderer``.
        processor: the model's processor (:func:`build_processor`).
        device (str or torch.device, optional): where every batch is made ready (with
            ``config.renderer == "torch"``, also where the scenes are rendered). Default: ``"cpu"``.

    Returns:
        *callable*: ``next_batch()`` -> pixel values ``(B, 3, H, W)``; the tokenized texts, ``2B + P`` rows:
        the ``B`` captions, their ``B`` hard negatives and the ``P`` prompts of :func:`shapes.all_prompts`;
        and the ``(B, P)`` prompt targets. The same ``config`` gives the same batches.
    """
    if config.renderer not in ("torch", "numpy"):
        raise ValueError(f"`renderer` must be 'torch' or 'numpy'; got {config.renderer!r}")
    device = torch.device(device)
    resnet = config.backbone == "resnet"
    prompts = shapes.all_prompts()
    rng = np.random.default_rng([config.seed, 20261129])
    if config.renderer == "numpy":
        prompt_index = {p: i for i, p in enumerate(prompts)}
        to_pixels = processor.pixels if resnet else None  # type: ignore[attr-defined]

        def numpy_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
            pixels, captions, negatives, targets = sample_batch(rng, config, prompt_index, to_pixels)
            texts = processor(text=captions + negatives + prompts, padding=True, return_tensors="pt")  # type: ignore[operator]
            return pixels.to(device), {k: v.to(device) for k, v in texts.items()}, targets.to(device)

        return numpy_batch
    generator = torch.Generator(device).manual_seed(config.seed)
    table = CaptionTable(processor, device)
    prompt_pairs = torch.full((len(prompts), shapes.MAX_OBJECTS), -1, device=device)
    prompt_pairs[:, 0] = torch.arange(len(prompts), device=device)
    resize = processor.pixel_values if resnet else partial(normalise, size=config.image_size)  # type: ignore[attr-defined]

    def torch_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        pixels, pairs, negatives, targets = sample_batch_torch(rng, generator, config, table, resize)
        return pixels, table(torch.cat([pairs, negatives, prompt_pairs])), targets

    return torch_batch


def _embed_texts(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return F.normalize(encode_texts(model, batch), dim=-1)


def _embed_images(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(encode_images(model, pixels), dim=-1)


def train(
    config: TrainConfig,
    progress: bool = True,
    callback: Callable[[int, torch.nn.Module, object], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, object, list[float]]:
    """Trains a ShapesCLIP from scratch.

    Args:
        config (TrainConfig): sizes and settings.
        progress (bool, optional): show a tqdm bar. Default: True.
        callback (callable, optional): called as ``callback(step, model, processor)`` after
            every step (the model is in train mode; a callback that evaluates must restore it).
        device (str or torch.device, optional): where the model trains and, with
            ``config.renderer == "torch"``, where the scenes are rendered. Default: ``"cpu"``.

    Returns:
        *tuple*: the trained model (in eval mode, on ``device``: a ``CLIPModel``, or an open_clip
        ``CLIP`` for ``backbone="resnet"``), its processor, and the loss of every step.
    """
    device = torch.device(device)
    resnet = config.backbone == "resnet"
    processor = build_processor(config.resnet_image_size if resnet else config.image_size, config.backbone)
    model = build_model(config).to(device).train()
    batch = batch_source(config, processor, device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=config.lr
    )

    def schedule(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - config.warmup) / max(1, config.steps - config.warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    labels = torch.arange(config.batch_size, device=device)
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="training ShapesCLIP", disable=not progress)
    for step in bar:
        pixels, texts, targets = batch()
        b = config.batch_size
        image_embeds = _embed_images(model, pixels)
        text_embeds = _embed_texts(model, texts)
        scale = model.logit_scale.exp().clamp(max=100.0)
        image_to_text = F.cross_entropy(scale * image_embeds @ text_embeds[: 2 * b].T, labels)
        text_to_image = F.cross_entropy(scale * text_embeds[:b] @ image_embeds.T, labels)
        prompt_logits = scale * image_embeds @ text_embeds[2 * b :].T
        prompt_loss = -(targets * prompt_logits.log_softmax(dim=-1)).sum(dim=-1).mean()
        loss = (image_to_text + text_to_image) / 2 + config.prompt_loss_weight * prompt_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}", refresh=False)
        if callback is not None:
            callback(step + 1, model, processor)
    return model.eval(), processor, torch.stack(losses).tolist()


def save(
    model: torch.nn.Module, processor: object, out: Path, info: dict | None = None, config: TrainConfig | None = None
) -> None:
    """Writes ``model`` (safetensors) and ``processor`` to one directory.

    An HF model is saved with ``save_pretrained``; an open_clip model (``config.backbone == "resnet"``) as
    ``open_clip_config.json`` and ``model.safetensors`` (its state dict, floats in float16: call
    :func:`to_storage_precision` first so that the saved model is the one in memory).
    """
    out.mkdir(parents=True, exist_ok=True)
    if config is not None and config.backbone == "resnet":
        from safetensors.torch import save_file

        (out / OPEN_CLIP_CONFIG).write_text(json.dumps(open_clip_config(config), indent=2) + "\n")
        state = {
            k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    else:
        model.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
    processor.save_pretrained(out)  # type: ignore[attr-defined]
    if info is not None:
        (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def to_storage_precision(model: torch.nn.Module) -> torch.nn.Module:
    """Rounds every float parameter and buffer to float16 and back, in place: the ResNet model as it is stored."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m tools.train_shapes", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model and processor to")
    parser.add_argument(
        "--backbone", choices=sorted(PRESETS), default="vit",
        help="vit: HF CLIPModel (default); resnet: open_clip CLIP with a ModifiedResNet (defaults: "
        + ", ".join(f"{k}={v}" for k, v in RESNET_DEFAULTS.items() if k != "backbone")
        + "); vit-deep: ShapesCLIP-Deep, an HF CLIPModel (defaults: "
        + ", ".join(f"{k}={v}" for k, v in DEEP_DEFAULTS.items() if k != "backbone") + ")",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where to train and render, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=None, help=f"default {defaults.steps} (vit)")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size} (vit)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the shipped weights; robust when other jobs share the cores)",
    )  # fmt: skip
    parser.add_argument("--no-eval", action="store_true", help="skip the quality report after training")
    parser.add_argument("--eval-every", type=int, default=0, help="print a quick held-out check every N steps")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a TrainConfig field (repeatable)"
    )
    args = parser.parse_args(argv)
    base = dict(PRESETS[args.backbone])
    if args.steps is None:
        args.steps = base.get("steps", defaults.steps)
    if args.batch_size is None:
        args.batch_size = base.get("batch_size", defaults.batch_size)
    base.pop("steps", None)
    base.pop("batch_size", None)
    if args.steps < 1 or args.batch_size < 2:
        parser.error("--steps must be >= 1 and --batch-size >= 2")
    torch.set_num_threads(args.threads)
    overrides = dict(base)
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types or not value:
            parser.error(f"--set expects FIELD=VALUE with FIELD one of {sorted(types)}; got {item!r}")
        overrides[key] = json.loads(value) if not value.isidentifier() else value
        if isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    config = TrainConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, **overrides)

    def check(step: int, model: torch.nn.Module, processor: object) -> None:
        if args.eval_every and step % args.eval_every == 0 and step < config.steps:
            from tools.shapes_quality import evaluate

            quick = evaluate(model, processor, n_single=120, n_pair=100, pointing=False)
            tqdm.write(f"step {step}: " + ", ".join(f"{k}={v:.3f}" for k, v in quick.items()))

    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    model, processor, losses = train(config, callback=check, device=args.device)
    model = model.cpu()
    minutes = (time.perf_counter() - start) / 60
    info: dict = {
        "config": asdict(config),
        "threads": args.threads,
        "device": args.device,
        "steps_per_second": round(config.steps / (time.perf_counter() - start), 3),
        "train_minutes": round(minutes, 2),
        "train_cpu_minutes": round((time.process_time() - cpu_start) / 60, 2),
        "load_average_before_and_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "final_loss": round(losses[-1], 4),
    }
    if config.backbone == "resnet":
        import open_clip

        info["open_clip"] = open_clip.__version__
        info["storage_dtype"] = "float16"
        to_storage_precision(model)  # the quality below is that of the saved weights
    if not args.no_eval:
        from tools.shapes_quality import evaluate

        info["quality"] = evaluate(model, processor)
    save(model, processor, args.out, info, config)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
