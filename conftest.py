"""Names the docstring Examples use, so that ``pytest --doctest-modules captum_gradeclip`` runs them.

Every Example sees the embedded ShapesCLIP and one scene of the shapes world (offline, built once):

- ``cg``, ``torch``, ``np``, ``shapes`` (:mod:`captum_gradeclip.zoo.shapes`), and ``GradECLIP``,
  ``ImageTextSimilarity``, ``TextImageSimilarity``, ``ImageClassification``, as Captum's own Examples use bare names;
- ``model, processor``: ShapesCLIP (a transformers ``CLIPModel`` and its ``CLIPProcessor``);
- ``scene``: ``shapes.make_scene(7)``; ``image``: its ``(64, 64, 3)`` uint8 array; ``texts``: its single-object
  prompts; ``pixel_values``: ``(1, 3, 64, 64)``;
- ``sim``: ``cg.ImageTextSimilarity(model, texts, processor=processor)``; ``T``: the texts' (normalised) embeddings;
  ``maps``: ``GradECLIP(sim).attribute(pixel_values, target=0)``, ``(1, 1, 8, 8)``;
- ``batch``: the processor's output for ``texts``; ``ids``, ``mask``: its ``input_ids``, ``attention_mask``;
- ``tsim``: ``cg.TextImageSimilarity(model, images=pixel_values)``; ``E``: the image's (normalised) embedding;
- ``tmp_path``: a fresh directory per Example, for the files an Example writes.

Each Example gets a fresh copy of the dictionary, so one Example's assignments do not leak into the next.
"""

from __future__ import annotations

import pytest

_NAMESPACE: dict = {}


def _namespace() -> dict:
    if not _NAMESPACE:
        import matplotlib

        matplotlib.use("Agg")
        import numpy as np
        import torch

        import captum_gradeclip as cg
        from captum_gradeclip.zoo import shapes

        torch.manual_seed(0)
        model, processor = cg.zoo.load_shapes_clip()
        scene = shapes.make_scene(7)
        texts = scene.prompts
        pixel_values = processor(images=scene.image, return_tensors="pt")["pixel_values"]
        batch = processor(text=texts, return_tensors="pt", padding=True)
        sim = cg.ImageTextSimilarity(model, texts, processor=processor)
        tsim = cg.TextImageSimilarity(model, images=pixel_values)
        _NAMESPACE.update(
            cg=cg,
            GradECLIP=cg.GradECLIP,
            ImageTextSimilarity=cg.ImageTextSimilarity,
            TextImageSimilarity=cg.TextImageSimilarity,
            ImageClassification=cg.ImageClassification,
            torch=torch,
            np=np,
            shapes=shapes,
            model=model,
            processor=processor,
            scene=scene,
            image=scene.array,
            texts=texts,
            pixel_values=pixel_values,
            sim=sim,
            maps=cg.GradECLIP(sim).attribute(pixel_values, target=0),
            T=sim.reference_embeds,
            batch=batch,
            ids=batch["input_ids"],
            mask=batch["attention_mask"],
            tsim=tsim,
            E=tsim.reference_embeds,
        )
    return _NAMESPACE


@pytest.fixture(autouse=True)
def _docstring_examples(request):
    """Fills ``doctest_namespace`` for doctest items only; ordinary tests never load the model here."""
    if type(request.node).__name__ == "DoctestItem":
        namespace = request.getfixturevalue("doctest_namespace")
        namespace.update(_namespace(), tmp_path=request.getfixturevalue("tmp_path"))
    yield
