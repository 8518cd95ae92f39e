"""One chunk of a dataset run: its items explained into one table of rows (good rows and error rows)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import torch
import torch.nn.functional as F

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.images import DEFAULT_MAX_PIXELS, ImageError, load_image, printable, resolve_inside
from captum_gradeclip.results import table_of
from captum_gradeclip.runs.pairs import InputError, Item

#: The method a run uses without ``method``.
DEFAULT_METHOD = "Grad-ECLIP (native)"


class Loaded(Protocol):
    """A model with its loader's own preprocessing (``captum_gradeclip.cli.load_model`` returns one)."""

    # Read-only members: a frozen or plain dataclass, or any object with these attributes, is one.
    @property
    def model(self) -> torch.nn.Module: ...
    @property
    def name(self) -> str: ...
    @property
    def pixels(self) -> Callable[[Any], torch.Tensor]: ...  # PIL.Image -> (1, C, H, W)
    @property
    def tokenize(self) -> Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]: ...  # -> (ids, mask)
    @property
    def tokens(self) -> Callable[[torch.Tensor], list[str]]: ...  # ids (L,) -> token strings
    @property
    def count_tokens(self) -> Callable[[str], int]: ...  # a text's length in tokens, without truncation
    @property
    def max_tokens(self) -> int | None: ...


def unsupported(method: methods.Method, adapter: Any, side: str) -> str | None:
    """Why ``method`` cannot explain ``side`` (``"image"``, ``"text"``) of the adapter's model; ``None`` if it can."""
    if side not in method.modalities:
        return f"{method.name} explains {' and '.join(method.modalities)} only"
    if method.needs_self_attention and adapter.attention_pool(side):
        return (
            f"{method.name} needs token-to-token attention in the {side} tower's last block, and this model's "
            "ends in an attention pool (one pooled query)"
        )
    return None


class DatasetExplainer:
    """Explains chunks of items with one model into rows of the result store's schema.

    Args:
        loaded (Loaded): the model and its loader's own preprocessing.
        images (Path): the folder that image paths are relative to.
        mode (str): Grad-ECLIP mode.
        batch_size (int): items per forward pass.
        classes (list[str], optional): zero-shot class names (pairs with labels).
        templates (list[str], optional): prompt templates with ``{}`` for zero-shot.
        max_pixels (int, optional): the pixel budget per image, of the file and once resized for the model.
        method (Method, optional): the method of :mod:`captum_gradeclip.methods`. Default: Grad-ECLIP (native).

    Attributes:
        no_words (str or None): why the method gives no word importances for this model (the rows then have no
            ``token_scores``); ``None`` when it does, or for zero-shot rows (which have none).

    Raises:
        InputError: the method cannot explain this model's images (saying why, and which methods can).
    """

    def __init__(
        self,
        loaded: Loaded,
        images: Path,
        mode: str = "native",
        batch_size: int = 32,
        classes: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        method: methods.Method | None = None,
    ) -> None:
        self.loaded, self.model, self.images = loaded, loaded.model, Path(images)
        self.method = methods.get(DEFAULT_METHOD) if method is None else method
        adapter = cg.get_adapter(self.model)
        why = unsupported(self.method, adapter, "image")
        if why is not None:
            usable = [m.name for m in methods.available("image", attention_pool=adapter.attention_pool("image"))]
            raise InputError(f"{why}; the methods for this model's images are {', '.join(usable)}")
        self.no_words = None if classes else unsupported(self.method, adapter, "text")
        self.mode, self.batch_size, self.max_pixels = mode, batch_size, max_pixels
        self.resize_side = max(adapter.image_size())
        self.classes = list(classes) if classes else None
        self.zero_shot = None
        if self.classes:
            self.zero_shot = cg.ImageTextSimilarity(
                self.model, text_embeds=self._class_embeds(self.classes, templates or ["{}"])
            )

    def _class_embeds(self, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        adapter = cg.get_adapter(self.model)
        per_template = []
        for template in templates:
            ids, mask = self.loaded.tokenize([template.format(c) for c in classes])
            device = next(self.model.parameters()).device
            with torch.no_grad():
                per_template.append(F.normalize(adapter.embed_texts(ids.to(device), mask.to(device)), dim=-1))
        return torch.stack(per_template).mean(0)  # the usual prompt ensemble

    def _check(self, item: Item) -> str | None:
        """The reason the item is an error row, from its text, label and path alone (nothing decoded)."""
        if self.classes is not None:
            if item.label not in self.classes:
                return f"unknown label: {printable(item.label)}"
        else:
            text = item.text or ""
            if not text.strip():
                return "empty text"
            try:
                text.encode("utf-8")
            except UnicodeError:
                return "bad text: not encodable (a lone surrogate)"
            if "\0" in text:
                return "bad text: a NUL byte"
            try:
                n_tokens = self.loaded.count_tokens(text)
            except Exception as error:  # a tokenizer's own refusal, whatever its type
                return f"bad text: the tokenizer refuses it ({printable(_first_line(error))[:120]})"
            limit = self.loaded.max_tokens
            if limit is not None and n_tokens > limit:
                return f"overlong text: {n_tokens} tokens > {limit}"
        try:
            resolve_inside(self.images, item.image)
        except ImageError as error:
            return str(error)
        return None

    def explain_chunk(self, items: Sequence[Item]) -> tuple[pa.Table, tuple[int, int] | None]:
        """One row per item, in item order, and the maps' grid shape (``None`` when no item has a map).

        Images are decoded one batch at a time, so at most ``batch_size`` decoded images (each within the pixel
        budget) are held at once, whatever the chunk size.
        """
        rows: dict[int, dict] = {item.index: _base_row(item, self.images) for item in items}
        pending = []
        for item in items:
            reason = self._check(item)
            if reason is not None:
                rows[item.index]["error"] = reason
            else:
                pending.append(item)
        shape = None
        for start in range(0, len(pending), self.batch_size):
            batch = []
            for item in pending[start : start + self.batch_size]:
                try:
                    image = load_image(item.image, self.images, self.max_pixels, resize_side=self.resize_side)
                    batch.append((item, image))
                except ImageError as error:
                    rows[item.index]["error"] = str(error)
            if batch:
                shape = self._explain_or_isolate(batch, rows) or shape
                del batch  # the decoded images of this batch
        if shape is None and items:  # every row an error: the parts of a run still share one schema
            shape = self.map_shape()
        return table_of([rows[i.index] for i in items], shape), shape

    def _explain_or_isolate(self, batch: list, rows: dict[int, dict]) -> tuple[int, int] | None:
        """Explains the batch; if the model or method refuses it (a non-finite input, ...), each item alone, so that
        only the items it refuses become error rows."""
        try:
            return self._explain_batch(batch, rows)
        except (ValueError, RuntimeError) as error:
            if len(batch) > 1:
                shapes = [self._explain_or_isolate([one], rows) for one in batch]
                return next((s for s in shapes if s is not None), None)
            message = printable(_first_line(error))[:160]
            finite = "NaN" not in message and "infinite" not in message and "non-finite" not in message
            reason = f"explanation failed: {message}" if finite else f"non-finite result: {message}"
            item = batch[0][0]
            rows[item.index] = {**_base_row(item, self.images), "error": reason}
            return None

    def map_shape(self) -> tuple[int, int]:
        """The grid shape of this run's maps, from one explanation of a blank image (computed once)."""
        if getattr(self, "_map_shape", None) is None:
            from PIL import Image

            side = self.resize_side
            device = next(self.model.parameters()).device
            pixels = self.loaded.pixels(Image.new("RGB", (side, side))).to(device)
            sim = self.zero_shot
            if sim is None:
                ids, mask = (t.to(device) for t in self.loaded.tokenize(["a"]))
                sim = cg.ImageTextSimilarity(self.model, {"input_ids": ids, "attention_mask": mask})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._map_shape = tuple(self._explainer(sim).attribute(pixels, target=[0]).shape[2:])
        return self._map_shape

    def _explain_batch(self, batch: list, rows: dict[int, dict]) -> tuple[int, int]:
        device = next(self.model.parameters()).device
        pixels = torch.cat([self.loaded.pixels(image) for _, image in batch]).to(device)
        own = list(range(len(batch)))
        if self.zero_shot is not None and self.classes is not None:  # the one is set where the other is
            labels = [self.classes.index(item.label) for item, _ in batch]
            with torch.no_grad():
                scores = self.zero_shot(pixels)
            maps = self._explainer(self.zero_shot).attribute(pixels, target=labels)[:, 0].float().cpu()
            predictions = scores.argmax(-1).tolist()
            for k, (item, _) in enumerate(batch):
                rows[item.index].update(label_index=labels[k], prediction=predictions[k])
            self._store(batch, rows, maps, scores[own, labels].float().cpu())
            return tuple(maps.shape[1:])
        ids, mask = (t.to(device) for t in self.loaded.tokenize([item.text for item, _ in batch]))
        sim = cg.ImageTextSimilarity(self.model, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            scores = sim(pixels)
        maps = self._explainer(sim).attribute(pixels, target=own)[:, 0].float().cpu()
        token_scores = None
        if self.no_words is None:
            tsim = cg.TextImageSimilarity(self.model, images=pixels)
            extra = (mask,) if mask is not None else None
            token_scores = self._explainer(tsim).attribute(ids, target=own, additional_forward_args=extra)
            token_scores = token_scores.float().cpu()
        lengths = mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * len(batch)
        for k, (item, _) in enumerate(batch):
            row, n = rows[item.index], int(lengths[k])
            row["token_ids"] = ids[k, :n].tolist()
            if token_scores is not None:
                row["token_scores"] = token_scores[k, :n].tolist()
                pairs = cg.words(self.loaded.tokens(ids[k, :n].cpu()), token_scores[k, :n], text=item.text)
                row["words"], row["word_scores"] = [w for w, _ in pairs], [float(s) for _, s in pairs]
        self._store(batch, rows, maps, scores[own, own].float().cpu())
        return tuple(maps.shape[1:])

    def _store(self, batch: list, rows: dict[int, dict], maps: torch.Tensor, scores: torch.Tensor) -> None:
        """Puts each item's map and score in its row; a non-finite map, score or token score is an error row."""
        for k, (item, _) in enumerate(batch):
            row = rows[item.index]
            values = [float(scores[k]), *row.get("token_scores", ())]
            if not torch.isfinite(maps[k]).all() or not all(math.isfinite(v) for v in values):
                row.clear()
                row.update(_base_row(item, self.images), error="non-finite result: the map or score is NaN or inf")
                continue
            row["map"], row["score"] = maps[k].flatten().numpy(), float(scores[k])

    def _explainer(self, sim: cg.SimilarityWrapper) -> cg.SimilarityAttribution:
        return self.method.build(sim, mode=self.mode)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _base_row(item: Item, images: Path) -> dict:
    size, mtime = image_stat(images, item.image)
    return {"item": item.index, "image": item.image, "text": item.text, "label": item.label,
            "image_bytes": size, "image_mtime_ns": mtime}  # fmt: skip


def image_stat(images: Path, name: str) -> tuple[int | None, int | None]:
    """``(size, mtime_ns)`` of an image file inside ``images``, or ``(None, None)`` (missing, outside, impossible)."""
    try:
        info = resolve_inside(images, name).stat()
    except (ImageError, OSError, ValueError):
        return None, None
    return info.st_size, info.st_mtime_ns
