"""``captum-gradeclip demo``: the first thing a newcomer runs.

It explains a few shapes-world scenes with the embedded, trained ShapesCLIP (offline): for
each scene, a heat map per object's prompt and for the whole caption, and the words of each
text coloured by importance. It writes one PNG per scene and an ``index.html`` report, and
prints where each map's maximum falls (every object's mask is known).

:func:`tiny_random_clip` and :func:`demo_image` remain for the tutorials: a tiny *random*
HF ``CLIPModel`` and a real photo, to show the pipeline on an arbitrary CLIP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.cbook
import numpy as np
import torch
from captum.attr import LayerAttribution
from PIL import Image
from tqdm import tqdm

from captum_gradeclip.cli.commands import CLIError, demo_parser
from captum_gradeclip.cli.explain import explain
from captum_gradeclip.cli.models import load_model
from captum_gradeclip.viz import ReportEntry, explanation_figure, figure_png, save_html
from captum_gradeclip.zoo import MODEL_SPECS, shapes

IMAGE_SIZE = 96  # of the tiny random CLIP: a multiple of its patch size 16
#: Held-out shapes-world seeds of the demo scenes (two and three objects).
DEMO_SCENES = ((4_000_001, 2), (4_000_002, 2), (4_000_003, 3), (4_000_004, 2))


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
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as f:
        image = f.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(image, dtype=np.float32) / 255.0


def run(
    out: Path,
    scenes: tuple[tuple[int, int], ...] = DEMO_SCENES,
    mode: str = "native",
    model: str = "shapes",
    device: str = "cpu",
) -> list[dict]:
    """Explains the demo scenes with ShapesCLIP; writes ``scene_K.png`` and ``index.html`` to ``out``.

    For each object, the map explains its prompt's zero-shot probability among all colour x shape
    prompts (``score="softmax"``: why this prompt and not the others); for the whole caption, its
    cosine similarity.

    Args:
        out (Path): the directory to write to.
        scenes (tuple, optional): ``(seed, n_objects)`` of each scene. Default: :data:`DEMO_SCENES`.
        mode (str, optional): Grad-ECLIP's mode. Default: ``"native"``.
        model (str, optional): a ShapesCLIP spec of :data:`captum_gradeclip.zoo.MODEL_SPECS`: ``"shapes"``
            (the ViT ShapesCLIP), ``"shapes:resnet"`` (the ResNet one), ... Default: ``"shapes"``.
        device (str, optional): where the model runs (``"cpu"``, ``"cuda"``, ...). Default: ``"cpu"``.

    Returns:
        *list[dict]*, one per scene: ``caption``, ``texts``, ``scores``, ``words``, ``hits`` (per
        object, whether its prompt's map peaks on it) and ``png``.
    """
    if model.partition(":")[0] != "shapes":
        raise CLIError(f"the demo runs on ShapesCLIP: --model {' or '.join(MODEL_SPECS)}; got {model!r}")
    loaded = load_model(model, device=device)
    prompts = shapes.all_prompts()
    out.mkdir(parents=True, exist_ok=True)
    method = f"Grad-ECLIP ({mode})"
    results: list[dict[str, Any]] = []
    entries: list[ReportEntry] = []
    misses: list[str] = []
    for k, (seed, count) in enumerate(tqdm(scenes, desc="demo scenes", unit="scene")):
        scene = shapes.make_scene(seed, n_objects=count)
        seen, probs, prompt_maps, prompt_words = explain(loaded, scene.image, prompts, mode, score="softmax")
        _, cosine, caption_map, caption_words = explain(loaded, scene.image, [scene.caption], mode)
        assert prompt_words is not None and caption_words is not None  # Grad-ECLIP explains ShapesCLIP's texts
        picked = [prompts.index(p) for p in scene.prompts]
        texts = [*scene.prompts, scene.caption]
        maps = torch.cat([prompt_maps[picked], caption_map])
        words = [prompt_words[i] for i in picked] + caption_words
        scores = [float(probs[i]) for i in picked] + [float(cosine[0])]
        names = ["p"] * len(picked) + ["cosine"]
        size = scene.masks.shape[-2:]  # the scene's pixels (the ResNet model sees them resized)
        peaks = LayerAttribution.interpolate(maps[None], size, "bilinear")[0].flatten(1).argmax(-1)
        masks = scene.masks.reshape(len(scene.objects), -1)
        hits = [bool(masks[i, int(peaks[i])]) for i in range(len(scene.objects))]
        misses += [f"scene {k}: {text!r}" for text, hit in zip(scene.prompts, hits, strict=True) if not hit]
        fig = explanation_figure(
            seen, texts, maps, words, scores=scores, score_names=names,
            title=f"scene {k}: {scene.caption} ({method} on {model})", explained=EXPLAINED,
        )  # fmt: skip
        png = figure_png(fig)
        path = out / f"scene_{k}.png"
        path.write_bytes(png)
        entries.append(ReportEntry(f"scene {k}: {scene.caption}", png, texts, words, scores))
        results.append(
            {"caption": scene.caption, "texts": texts, "scores": scores, "names": names, "words": words,
             "hits": hits, "png": path}
        )  # fmt: skip
    found = sum(len(r["hits"]) for r in results) - len(misses)
    summary = [
        f"Maps peaking on their object: {found} of {found + len(misses)}."
        + (f" Peaking elsewhere: {'; '.join(misses)}." if misses else ""),
        f"The maps explain {EXPLAINED}.",
    ]
    save_html(
        out / "index.html", entries, title=f"{method} on ShapesCLIP ({model}): the demo", method=method, model=model,
        summary=summary,
    )  # fmt: skip
    return results


#: Which score the demo's maps explain, as its figures and report say.
EXPLAINED = "p, each object's prompt's probability among all 24 prompts, and the caption's cosine similarity"


def main(argv: list[str] | None = None) -> None:
    parser = demo_parser()
    args = parser.parse_args(argv)
    results = run(args.out, mode=args.mode, model=args.model, device=args.device)
    for k, result in enumerate(results):
        print(f"scene {k}: {result['caption']}")
        for j, text in enumerate(result["texts"]):
            where = ""
            if j < len(result["hits"]):
                where = "  map peaks on it" if result["hits"][j] else "  map peaks elsewhere"
            importances = " ".join(f"{w}={s:.3f}" for w, s in result["words"][j])
            print(f"  {result['names'][j]} {result['scores'][j]:.4f}  {text!r}{where}  words: {importances}")
    hits = [h for r in results for h in r["hits"]]
    print(f"maps peaking on the named object: {sum(hits)}/{len(hits)}")
    print(f"wrote {len(results)} figures and {args.out / 'index.html'}")
