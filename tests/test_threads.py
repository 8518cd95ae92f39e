"""Explanations from several threads on one shared model (issue 27).

Four threads explain, at once, with every registered method on both sides of one shared ShapesCLIP, each its
own inputs and targets, in its own order; a fifth thread only scores images and texts with the bare wrappers
throughout (so that a hook on the image side, such as Captum's LayerGradCam on the patch embedding, or on the
text side, such as Captum's LayerIntegratedGradients replacing the token embeddings, would show). Every
explanation must equal the one computed alone (bit-identical, or within 1e-6), the scoring thread's scores
must equal the unhooked model's, and the model is left as it was (no hooks, same flags, same modes).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

import captum_gradeclip as cg
from captum_gradeclip import methods as registry
from captum_gradeclip.zoo import shapes
from tests.conftest import assert_unchanged, count_hooks, model_snapshot

THREADS = 4
ROUNDS = 2  # every thread explains every case this many times
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def shared():
    """One ShapesCLIP, an image and a text wrapper on it, and per thread its own scene and target."""
    model, processor = cg.zoo.load_shapes_clip()
    scenes = [shapes.make_scene(i, n_objects=2) for i in range(THREADS)]
    prompts = [scenes[0].prompts[0], scenes[1].prompts[1], "a green cross"]
    images = torch.cat([processor(images=s.image, return_tensors="pt")["pixel_values"] for s in scenes])
    sim = cg.ImageTextSimilarity(model, prompts, processor=processor)
    tsim = cg.TextImageSimilarity(model, images=images[:3])
    batch = processor(text=[s.prompts[0] for s in scenes], padding=True, return_tensors="pt")
    return model, sim, tsim, images, batch["input_ids"], batch["attention_mask"]


def _cases():
    return [(m, side) for m in registry.available() for side in m.modalities]


def test_every_registered_method_and_side_is_run():
    names = {f"{m.name} / {side}" for m, side in _cases()}
    assert {"captum:LayerGradCam / image", "captum:IntegratedGradients / text", "captum:Occlusion / image"} <= names


def _explain(method, side, shared, i, explainer=None):
    """Thread ``i``'s explanation with ``method`` on ``side``: its own input row and its own target, with
    ``explainer`` (one shared by all threads) or a new one."""
    _, sim, tsim, images, ids, mask = shared
    explainer = explainer or method.build(sim if side == "image" else tsim, quick=True)
    if side == "image":
        return explainer.attribute(images[i : i + 1], target=i % 3)
    return explainer.attribute(ids[i : i + 1], target=i % 3, additional_forward_args=(mask[i : i + 1],))


def test_threads_explaining_at_once_on_one_model_equal_one_at_a_time(shared):
    model, sim, tsim, images, ids, mask = shared
    snapshot, hooks = model_snapshot(model), count_hooks(model)
    cases = _cases()
    alone = {(m.name, side, i): _explain(m, side, shared, i) for m, side in cases for i in range(THREADS)}
    with torch.no_grad():
        bare = sim(images), tsim(ids, mask)  # the unhooked model's scores

    results: dict[tuple[str, str, int], list[torch.Tensor]] = {}
    errors: list[BaseException] = []
    scored: list[tuple[torch.Tensor, torch.Tensor]] = []
    done = threading.Event()
    start = threading.Barrier(THREADS + 1)

    # one explainer per case shared by all threads (round 0), and new ones in each thread (the other rounds)
    common = {(m.name, side): m.build(sim if side == "image" else shared[2], quick=True) for m, side in cases}

    def explain(i: int) -> None:
        order = [(r, c) for r in range(ROUNDS) for c in cases]
        random.Random(i).shuffle(order)  # every thread in its own order: different methods overlap
        start.wait()
        try:
            for r, (m, side) in order:
                explainer = common[m.name, side] if r == 0 else None
                results.setdefault((m.name, side, i), []).append(_explain(m, side, shared, i, explainer))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    def score() -> None:
        start.wait()
        try:
            while not done.is_set():
                with torch.no_grad():
                    scored.append((sim(images), tsim(ids, mask)))
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=explain, args=(i,)) for i in range(THREADS)]
    scorer = threading.Thread(target=score)
    began = time.perf_counter()
    for t in [*workers, scorer]:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - began
    done.set()
    scorer.join()

    assert not errors, errors[0]
    worst: dict[str, float] = {}
    for (name, side, i), got in results.items():
        assert len(got) == ROUNDS
        for value in got:
            diff = float((value - alone[name, side, i]).abs().max())
            worst[f"{name} / {side}"] = max(worst.get(f"{name} / {side}", 0.0), diff)
    assert len(results) == len(cases) * THREADS
    assert {k: v for k, v in worst.items() if v > TOLERANCE} == {}
    assert scored, "the scoring thread never ran"
    assert all(torch.equal(s, bare[0]) for s, _ in scored), "a bare image forward saw an explanation's hooks"
    assert all(torch.equal(t, bare[1]) for _, t in scored), "a bare text forward saw an explanation's hooks"
    assert_unchanged(model, snapshot)
    assert count_hooks(model) == hooks
    calls = len(cases) * THREADS * ROUNDS
    print(f"\n{THREADS} threads x {len(cases)} cases x {ROUNDS} rounds = {calls} explanations in {elapsed:.1f} s")
    print(f"scoring thread: {len(scored)} bare image and text forwards, all equal to the unhooked model's")
    for key, diff in worst.items():
        print(f"  {key:32s} max |threaded - alone| = {diff:.3g}")


def test_a_hook_acts_only_in_the_thread_that_installed_it(shared):
    """The probe's substitute stays out of another thread's forward through the same module."""
    _, sim, _, images, _, _ = shared
    block = sim.explained_blocks()[-1]
    with torch.no_grad():
        bare = sim(images[:1])
    inside: list[torch.Tensor] = []
    with sim.adapter.probe(block, lambda _record, o: torch.zeros_like(o)), torch.no_grad():
        mine = sim(images[:1])  # this thread: the substitute acts
        t = threading.Thread(target=lambda: inside.append(sim(images[:1])))
        t.start()
        t.join()
    assert not torch.equal(mine, bare)
    assert torch.equal(inside[0], bare)


def test_the_model_guard_keeps_parameters_off_until_the_last_explanation_ends(shared):
    """``requires_grad`` is the model's, shared by all threads: the first explanation switches it off, the last
    one to end switches it back, under the model's one lock, also when an explanation fails."""
    from captum_gradeclip.attr.base import model_guard, preserved_model

    model, sim, tsim, _, _, _ = shared
    params = list(model.parameters())
    first_in, second_out, release = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with preserved_model(sim):
            first_in.set()
            release.wait(30)

    t = threading.Thread(target=first)
    t.start()
    assert first_in.wait(30)
    with pytest.raises(RuntimeError, match="boom"), preserved_model(tsim):  # another wrapper of the same model
        assert not any(p.requires_grad for p in params)
        raise RuntimeError("boom")
    second_out.set()
    assert not any(p.requires_grad for p in params)  # the first explanation still runs: still off
    release.set()
    t.join()
    assert all(p.requires_grad for p in params)
    guard = model_guard(model)
    assert (guard.active, guard.graphs, guard.frozen) == (0, 0, [])
    assert guard.lock.acquire(blocking=False)  # released, also after the exception
    guard.lock.release()
