"""``captum-gradeclip explain IMAGE TEXT [TEXT ...]``: explain one image against several texts.

One batched call of the method (Grad-ECLIP by default, ``--method NAME`` any method of
:mod:`captum_gradeclip.methods`) gives a heat map per text, a second one the word importances of
every text. It prints the scores and the words, and writes one figure with every text side by side
(``explanation.png``) and an ``index.html`` report to ``--out``.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import TYPE_CHECKING, Any

import torch

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.adapters import Adapter
from captum_gradeclip.cli.commands import CLIError, explain_parser
from captum_gradeclip.cli.files import check_output_directory, read_image
from captum_gradeclip.cli.models import LoadedModel, load_model
from captum_gradeclip.runs.explainer import unsupported
from captum_gradeclip.viz import ReportEntry, explanation_figure, figure_png, save_html
from captum_gradeclip.vocabulary import UNKNOWN_TOKENS, unknown_words_message

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: The method ``explain`` uses without ``--method``.
DEFAULT_METHOD = "Grad-ECLIP (native)"


def pick_method(name: str | None, mode: str = "native", prog: str = "captum-gradeclip explain") -> methods.Method:
    """The method ``--method NAME`` names: its registry name or the start of it, up to case, spaces and
    punctuation (``game``, ``rollout``, ``grad-eclip``); :data:`DEFAULT_METHOD` for ``None``. A start that several
    variants of one class share picks the first listed (``grad-eclip``: the native mode; ``--mode`` chooses).

    Args:
        name (str, optional): the ``--method`` value.
        mode (str, optional): the ``--mode`` value, which only a method with modes (Grad-ECLIP) takes.
        prog (str, optional): the command, for the error message.

    Raises:
        CLIError: no method or several different methods match (naming the valid names), or ``mode`` is not
        ``"native"`` for a method without modes.
    """
    if name is None:
        return methods.get(DEFAULT_METHOD)
    found = methods.match(name)
    names = ", ".join(repr(m.name) for m in methods.available())
    if not found:
        near = methods.closest(name)
        hint = f" (did you mean {near!r}?)" if near else ""
        raise CLIError(f"{prog}: --method: no method is called {name!r}{hint}; the methods are {names}")
    if len({m.cls for m in found}) > 1:
        several = ", ".join(repr(m.name) for m in found)
        raise CLIError(f"{prog}: --method: {name!r} matches {several}; give more of the name")
    method = found[0]
    if mode != "native" and "mode" not in inspect.signature(method.cls.__init__).parameters:
        raise CLIError(f"{prog}: --mode {mode} is Grad-ECLIP's; {method.name} has no modes")
    return method


def check_image_side(method: methods.Method, adapter: Adapter) -> None:
    """A ValueError saying why, and which methods would do, when ``method`` cannot explain the model's images."""
    why = unsupported(method, adapter, "image")
    if why is not None:
        usable = [m.name for m in methods.available("image", attention_pool=adapter.attention_pool("image"))]
        raise ValueError(f"{why}; the methods for this model's images are {', '.join(usable)}")


def explain(
    loaded: LoadedModel,
    image: Image.Image,
    texts: list[str],
    mode: str = "native",
    score: str = "cosine",
    method: methods.Method | None = None,
) -> tuple[object, torch.Tensor, torch.Tensor, list[list[tuple[str, float]]] | None]:
    """Explains ``image`` against ``texts`` with the loaded model.

    Args:
        loaded (LoadedModel): the model and its preprocessing.
        image (PIL.Image.Image): the image.
        texts (list[str]): the M texts.
        mode (str, optional): Grad-ECLIP's mode (other methods have none). Default: ``"native"``.
        score (str, optional): the explained image score: ``"cosine"``, ``"logit"`` or
            ``"softmax"`` (each text's probability among the M texts). The word importances always
            explain the cosine. Default: ``"cosine"``.
        method (Method, optional): the method of the registry, built with its default settings. Default:
            Grad-ECLIP (native).

    Returns:
        *tuple*: the image as the model saw it ``(H, W, 3)``, the scores ``(M,)``, the maps
        ``(M, h, w)`` and the word importances of each text (unknown words as typed), or ``None`` when the
        method does not explain the text side.

    Raises:
        ValueError: the method cannot explain this model's image side (saying why).

    Warns:
        UserWarning: naming the words the model's tokenizer does not know; that the word importances are
        skipped, and why, when the method does not explain this model's text side.
    """
    method = methods.get(DEFAULT_METHOD) if method is None else method
    device = next(loaded.model.parameters()).device
    pixels = loaded.pixels(image).to(device)
    input_ids, attention_mask = loaded.tokenize(texts)  # on the CPU: the wrappers and explanations move them
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    sim = cg.ImageTextSimilarity(loaded.model, batch, score=score)
    check_image_side(method, sim.adapter)
    scores = sim(pixels).detach()[0]
    options: dict[str, Any] = {"mode": mode} if "mode" in inspect.signature(method.cls.__init__).parameters else {}
    maps = method.build(sim, **options).attribute(pixels)[0]  # one batched call: (M, h, w)
    tsim = cg.TextImageSimilarity(loaded.model, images=pixels)
    why = unsupported(method, tsim.adapter, "text")
    if why is not None:
        warnings.warn(f"no word importances: {why}", UserWarning, stacklevel=2)
        return loaded.display_image(pixels.cpu()), scores.float().cpu(), maps.float().cpu(), None
    token_scores = method.build(tsim, **options).attribute(
        input_ids, target=[0] * len(texts), additional_forward_args=(attention_mask,)
    )
    words = []
    unknown: list[str] = []
    for text, ids, mask, row in zip(texts, input_ids, attention_mask, token_scores, strict=True):
        keep = mask.bool()
        tokens = loaded.tokens(ids[keep])
        words.append(cg.words(tokens, row[keep], text=text))
        as_tokens = cg.words(tokens, row[keep])  # unknown words as the tokenizer's unknown token
        unknown += [w for (t, _), (w, _) in zip(as_tokens, words[-1], strict=True) if t in UNKNOWN_TOKENS]
    if unknown:
        shapes_clip = loaded.name.partition(":")[0] == "shapes"
        warnings.warn(unknown_words_message(list(dict.fromkeys(unknown)), shapes_clip), UserWarning, stacklevel=2)
    return loaded.display_image(pixels.cpu()), scores.float().cpu(), maps.float().cpu(), words


#: Two scores closer than this are a tie: no text is marked best.
TIE = 1e-5


def best_index(scores: torch.Tensor) -> int | None:
    """The index of the highest score, or ``None`` when another score ties with it (within :data:`TIE`)."""
    top = float(scores.max())
    winners = [j for j, s in enumerate(scores.tolist()) if s >= top - TIE]
    return winners[0] if len(winners) == 1 else None


def main(argv: list[str] | None = None) -> None:
    parser = explain_parser()
    args = parser.parse_args(argv)
    texts = [t.strip() for t in args.texts]
    if not all(texts):
        raise CLIError("captum-gradeclip explain: every TEXT must be non-empty")
    if args.score == "softmax" and len(texts) == 1:
        raise CLIError(
            "captum-gradeclip explain: --score softmax with one TEXT is always 1 (a probability among one text), "
            "so its map says nothing; give two or more TEXTs, or use --score cosine"
        )
    method = pick_method(args.method, args.mode)
    image = read_image(args.image)
    check_output_directory(args.out)  # before the computing
    loaded = load_model(args.model, args.dtype, args.device, allow_missing_weights=args.allow_missing_weights)
    for j, text in enumerate(texts):
        n_tokens = loaded.count_tokens(text)
        if loaded.max_tokens is not None and n_tokens > loaded.max_tokens:
            print(f"note: TEXT {j + 1} has {n_tokens} tokens; the model reads the first {loaded.max_tokens} "
                  "(the rest is cut, and has no word scores)")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            seen, scores, maps, words = explain(loaded, image, texts, args.mode, args.score, method)
        except (ValueError, TypeError) as error:
            raise CLIError(f"cannot explain with {args.model}: {str(error).splitlines()[0]}") from None
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    best = best_index(scores)
    if best is None and len(texts) > 1:
        notes.append("no text is marked best: the highest scores tie (the model cannot tell these texts apart)")
    for note in notes:
        print(f"captum-gradeclip: warning: {note}", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    values = [float(s) for s in scores]
    for j, text in enumerate(texts):
        marker = "*" if j == best else " "
        importances = " ".join(f"{w}={s:.3f}" for w, s in words[j]) if words is not None else "(not explained)"
        print(f"{marker} {values[j]:.4f}  {text!r}  words: {importances}")
    summary = [f"The maps explain the {SCORES[args.score]}."]
    if words is not None and args.score != "cosine":
        summary.append(f"The word importances explain the image-text cosine similarity, not the {args.score}.")
    for line in summary[1:]:
        print(f"note: {line[0].lower()}{line[1:]}")
    by = f"{method.name} on {args.model}"
    unknown = [n for n in notes if "unknown token" in n]
    placed = loaded.processing is not None  # the original image with the maps where the model looked
    fig = explanation_figure(
        image if placed else seen, texts, maps, words, scores=values, score_names=args.score,
        processor=loaded.processing if placed else None,
        title="\n".join([f"{args.image.name} ({by})", *(f"warning: {n.split(':')[0]}" for n in unknown)]),
        explained=f"the {SCORES[args.score]}",
    )  # fmt: skip
    png = figure_png(fig)
    (args.out / "explanation.png").write_bytes(png)
    entry = ReportEntry(f"{args.image.name}", png, texts, words or [], values, best=best)
    report = save_html(
        args.out / "index.html", [entry], title=f"{args.image.name} explained by {by}", notes=notes,
        method=method.name, model=args.model, summary=summary,
    )  # fmt: skip
    print(f"explained by {by}; wrote {args.out / 'explanation.png'} and {report}")


#: What each ``--score`` is, as the figure and the report say.
SCORES = {
    "cosine": "cosine similarity of the image and each text",
    "logit": "logit of each text (the scaled cosine similarity)",
    "softmax": "softmax: each text's probability among the texts given",
}
