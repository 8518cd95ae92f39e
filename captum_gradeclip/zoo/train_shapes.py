"""Trains ShapesCLIP, the embedded HF ``CLIPModel``, on the shapes world.

Run ``python -m captum_gradeclip.zoo.train_shapes --out DIR`` (see ``--help``). The run is
seeded: the same seed, steps and thread count give the same weights. It writes a
``from_pretrained`` directory: ``config.json``, ``model.safetensors`` and the processor (a
``CLIPImageProcessor`` with the pixel normalisation and the word-level tokenizer).

Training for binding (which colour goes with which shape), on top of CLIP's symmetric
contrastive loss:

- most scenes hold 2 or 3 objects;
- every image gets a hard-negative caption: its colours swapped between two objects, or one
  object's colour or shape changed;
- a prompt loss scores every image against all single-object prompts ("a red circle"), with
  the present objects as soft targets.

Pixels are normalised; without that the loss sits at ln(batch) and nothing is learned.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm

from captum_gradeclip.zoo import shapes

#: Pixel normalisation, measured on the shapes world (per channel, all channels alike).
PIXEL_MEAN = (0.43, 0.43, 0.43)
PIXEL_STD = (0.15, 0.15, 0.15)
SPECIAL_TOKENS = ("<s>", "<pad>", "<unk>", "</s>")
MAX_TEXT_LENGTH = 32


@dataclass
class TrainConfig:
    """Model size and optimisation settings; the defaults reproduce the shipped weights."""

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


def build_tokenizer() -> object:
    """A word-level ``PreTrainedTokenizerFast`` over :data:`shapes.VOCABULARY` (lower-cased, ``<s> ... </s>``)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {w: i for i, w in enumerate((*SPECIAL_TOKENS, *shapes.VOCABULARY))}
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
        model_max_length=MAX_TEXT_LENGTH,
    )


def build_processor(image_size: int = shapes.IMAGE_SIZE) -> object:
    """A ``CLIPProcessor``: the shapes-world pixel normalisation and :func:`build_tokenizer`."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(PIXEL_MEAN),
        image_std=list(PIXEL_STD),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer())


def build_model(config: TrainConfig) -> torch.nn.Module:
    """A randomly initialised HF ``CLIPModel`` of the configured size (seeded by ``config.seed``)."""
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
    pairs = [(o.colour, o.shape) for o in objects]
    swaps = [
        (i, j)
        for i in range(len(pairs))
        for j in range(i + 1, len(pairs))
        if pairs[i][0] != pairs[j][0] and pairs[i][1] != pairs[j][1]
    ]
    if swaps and rng.random() < 0.6:
        i, j = swaps[int(rng.integers(len(swaps)))]
        pairs[i], pairs[j] = (pairs[j][0], pairs[i][1]), (pairs[i][0], pairs[j][1])
        return shapes.caption(pairs)
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
    return shapes.caption(pairs)


def sample_batch(
    rng: np.random.Generator, config: TrainConfig, prompt_index: dict[str, int]
) -> tuple[torch.Tensor, list[str], list[str], torch.Tensor]:
    """Images ``(B, 3, H, W)`` normalised, captions, hard negatives and ``(B, P)`` prompt targets."""
    counts = rng.choice(3, size=config.batch_size, p=config.object_weights) + 1
    images, captions, negatives = [], [], []
    targets = torch.zeros(config.batch_size, len(prompt_index))
    for b, n in enumerate(counts):
        array, objects = shapes.render(rng, int(n), config.image_size)
        images.append(array)
        captions.append(shapes.caption([(o.colour, o.shape) for o in objects]))
        negatives.append(hard_negative(objects, rng))
        for o in objects:
            targets[b, prompt_index[o.prompt]] = 1.0 / len(objects)
    return normalise(np.stack(images)), captions, negatives, targets


def normalise(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float, as the saved ``CLIPImageProcessor`` does."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _embed_texts(model: torch.nn.Module, tokenizer: object, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
    out = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)


def _embed_images(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixels)
    return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)


def train(
    config: TrainConfig, progress: bool = True, callback: Callable[[int, torch.nn.Module, object], None] | None = None
) -> tuple[torch.nn.Module, object, list[float]]:
    """Trains a ShapesCLIP from scratch.

    Args:
        config (TrainConfig): sizes and settings.
        progress (bool, optional): show a tqdm bar. Default: True.
        callback (callable, optional): called as ``callback(step, model, processor)`` after
            every step (the model is in train mode; a callback that evaluates must restore it).

    Returns:
        *tuple*: the trained ``CLIPModel`` (in eval mode), its ``CLIPProcessor``, and the loss of every step.
    """
    processor = build_processor(config.image_size)
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    model = build_model(config).train()
    prompts = shapes.all_prompts()
    prompt_index = {p: i for i, p in enumerate(prompts)}
    rng = np.random.default_rng([config.seed, 20261129])
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
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="training ShapesCLIP", disable=not progress)
    for step in bar:
        pixels, captions, negatives, targets = sample_batch(rng, config, prompt_index)
        b = len(captions)
        image_embeds = _embed_images(model, pixels)
        text_embeds = _embed_texts(model, tokenizer, captions + negatives + prompts)
        scale = model.logit_scale.exp().clamp(max=100.0)
        labels = torch.arange(b)
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
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if callback is not None:
            callback(step + 1, model, processor)
    return model.eval(), processor, losses


def save(model: torch.nn.Module, processor: object, out: Path, info: dict | None = None) -> None:
    """Writes ``model`` (safetensors) and ``processor`` as one ``from_pretrained`` directory."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
    processor.save_pretrained(out)  # type: ignore[attr-defined]
    if info is not None:
        (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m captum_gradeclip.zoo.train_shapes", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model and processor to")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
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
    if args.steps < 1 or args.batch_size < 2:
        parser.error("--steps must be >= 1 and --batch-size >= 2")
    torch.set_num_threads(args.threads)
    overrides = {}
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
            from captum_gradeclip.zoo.quality import evaluate

            quick = evaluate(model, processor, n_single=120, n_pair=100)
            tqdm.write(f"step {step}: " + ", ".join(f"{k}={v:.3f}" for k, v in quick.items()))

    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    model, processor, losses = train(config, callback=check)
    minutes = (time.perf_counter() - start) / 60
    info: dict = {
        "config": asdict(config),
        "threads": args.threads,
        "train_minutes": round(minutes, 2),
        "train_cpu_minutes": round((time.process_time() - cpu_start) / 60, 2),
        "load_average_before_and_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "final_loss": round(losses[-1], 4),
    }
    if not args.no_eval:
        from captum_gradeclip.zoo.quality import evaluate

        info["quality"] = evaluate(model, processor)
    save(model, processor, args.out, info)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
