"""``captum-gradeclip explain IMAGE TEXT [TEXT ...]``: explain one image against several texts.

One batched Grad-ECLIP call gives a heat map per text, a second one the word importances of
every text. It prints the scores and the words, and writes a figure per text and an
``index.html`` report to ``--out``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

import captum_gradeclip as cg
from captum_gradeclip.cli import (
    DTYPES,
    MODEL_SPECS,
    ArgumentParser,
    CLIError,
    LoadedModel,
    check_output_directory,
    load_model,
    read_image,
)
from captum_gradeclip.viz import ReportEntry, explanation_figure, figure_png, save_html

UNKNOWN_TOKENS = ("<unk>", "[UNK]")


def explain(
    loaded: LoadedModel, image: object, texts: list[str], mode: str = "native", score: str = "cosine"
) -> tuple[object, torch.Tensor, torch.Tensor, list[list[tuple[str, float]]]]:
    """Explains ``image`` against ``texts`` with the loaded model.

    Args:
        loaded (LoadedModel): the model and its preprocessing.
        image (PIL.Image.Image): the image.
        texts (list[str]): the M texts.
        mode (str, optional): Grad-ECLIP's mode. Default: ``"native"``.
        score (str, optional): the explained image score: ``"cosine"``, ``"logit"`` or
            ``"softmax"`` (each text's probability among the M texts). The word importances always
            explain the cosine. Default: ``"cosine"``.

    Returns:
        *tuple*: the image as the model saw it ``(H, W, 3)``, the scores ``(M,)``, the maps
        ``(M, h, w)`` and the word importances of each text.
    """
    pixels = loaded.pixels(image)  # type: ignore[arg-type]
    input_ids, attention_mask = loaded.tokenize(texts)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    sim = cg.ImageTextSimilarity(loaded.model, batch, score=score)
    scores = sim(pixels).detach()[0]
    maps = cg.GradECLIP(sim, mode=mode).attribute(pixels)[0]  # one batched call: (M, h, w)
    tsim = cg.TextImageSimilarity(loaded.model, images=pixels)
    token_scores = cg.GradECLIP(tsim, mode=mode).attribute(
        input_ids, target=[0] * len(texts), additional_forward_args=(attention_mask,)
    )
    words = []
    for ids, mask, row in zip(input_ids, attention_mask, token_scores, strict=True):
        keep = mask.bool()
        words.append(cg.words(loaded.tokens(ids[keep]), row[keep]))
    return loaded.display_image(pixels), scores.float(), maps.float(), words


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="captum-gradeclip explain", description=__doc__)
    parser.add_argument("image", type=Path, help="the image file")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts to explain the image against")
    parser.add_argument("--model", default="shapes", help=f"{MODEL_SPECS} (default: shapes, the embedded model)")
    parser.add_argument("--mode", choices=["native", "paper"], default="native", help="Grad-ECLIP mode")
    parser.add_argument(
        "--score", choices=["cosine", "logit", "softmax"], default="cosine",
        help="the explained image score; softmax: each text's probability among the given texts",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("gradeclip_explain"), help="directory for the figures")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="the model's precision")
    args = parser.parse_args(argv)
    texts = [t.strip() for t in args.texts]
    if not all(texts):
        raise CLIError("captum-gradeclip explain: every TEXT must be non-empty")
    image = read_image(args.image)
    check_output_directory(args.out)  # before the computing
    loaded = load_model(args.model, args.dtype)
    for j, text in enumerate(texts):
        n_tokens = loaded.count_tokens(text)
        if loaded.max_tokens is not None and n_tokens > loaded.max_tokens:
            print(f"note: TEXT {j + 1} has {n_tokens} tokens; the model reads the first {loaded.max_tokens} "
                  "(the rest is cut, and has no word scores)")  # fmt: skip
    ids, mask = loaded.tokenize(texts)
    unknown = sum(
        t in UNKNOWN_TOKENS for row, keep in zip(ids, mask, strict=True) for t in loaded.tokens(row[keep.bool()])
    )
    if unknown:
        print(f"note: {unknown} word(s) are unknown to the model's tokenizer and read as an unknown token")
    try:
        seen, scores, maps, words = explain(loaded, image, texts, args.mode, args.score)
    except (ValueError, TypeError) as error:
        raise CLIError(f"cannot explain with {args.model}: {str(error).splitlines()[0]}") from None

    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    best = int(scores.argmax())
    for j, text in enumerate(tqdm(texts, desc="figures", unit="text")):
        fig = explanation_figure(
            seen, [text], maps[j : j + 1], [words[j]], scores=[float(scores[j])], score_names=args.score
        )
        png = figure_png(fig)
        (args.out / f"text_{j}.png").write_bytes(png)
        entries.append(ReportEntry(f"{j}: {text}", png, [text], [words[j]], [float(scores[j])]))
        marker = "*" if j == best else " "
        importances = " ".join(f"{w}={s:.3f}" for w, s in words[j])
        print(f"{marker} {float(scores[j]):.4f}  {text!r}  words: {importances}")
    report = save_html(args.out / "index.html", entries, title=f"{args.image.name} explained by {args.model}")
    print(f"wrote {len(texts)} figures and {report}")
