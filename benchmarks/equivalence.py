"""Behaviour lock for refactors: every method's maps, token scores and a few metrics on every tiny loader.

    python -m benchmarks.equivalence --record FILE    # on the reference tree
    python -m benchmarks.equivalence --compare FILE   # after a change: identical, or how far apart

Runs Grad-ECLIP (native and paper mode) and every baseline on every tiny random loader the tests build
(``tests.adapters.conftest.LOADERS``, plus the HF ViT classifier), image and text side, for fixed seeds, with
``target=None`` and a per-example target list; records the outputs (or the error a method raises where it does
not apply) and the deletion AUC / pointing results of some maps. ``--compare`` reports, per entry, whether the
result is bit-identical, within ``--atol`` (default 1e-6, relative to the map's maximum), or different, and
exits non-zero if any entry differs beyond the tolerance or is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import captum_gradeclip as cg
from captum_gradeclip import baselines

SEEDS = (0, 1)
#: (name, factory(sim) -> explainer); small settings, as the tests use.
METHODS = [
    ("GradECLIP-native", lambda s: cg.GradECLIP(s, mode="native")),
    ("GradECLIP-paper", lambda s: cg.GradECLIP(s, mode="paper")),
    ("GradECLIP-native-2layers", lambda s: cg.GradECLIP(s, mode="native", layers=2)),
    ("RawAttention", baselines.RawAttention),
    ("AttentionRollout", baselines.AttentionRollout),
    ("GAME", baselines.GAME),
    ("TokenGradCAM", baselines.TokenGradCAM),
    ("MaskCLIP", baselines.MaskCLIP),
    ("CLIPSurgery", baselines.CLIPSurgery),
    ("RISE", lambda s: baselines.RISE(s, n_masks=8)),
    ("M2IB", lambda s: baselines.M2IB(s, steps=2)),
]


def _run(results: dict, key: str, fn, *args, **kwargs) -> torch.Tensor | None:
    try:
        out = fn(*args, **kwargs)
    except Exception as error:  # a method that does not apply: its error is part of the behaviour
        results[key] = f"{type(error).__name__}: {error}"
        return None
    results[key] = out.detach().clone() if isinstance(out, torch.Tensor) else torch.as_tensor(out)
    return out


def _explain(make, sim, inputs, target, extra=None) -> torch.Tensor:
    return make(sim).attribute(inputs, target=target, additional_forward_args=extra)


def _deletion_auc(sim, x, maps) -> torch.Tensor:
    return cg.metrics.image_deletion(sim, x, maps, target=[1, 2], steps=5).auc


def _text_deletion_auc(tsim, ids, scores, mask) -> torch.Tensor:
    return cg.metrics.text_deletion(tsim, ids, scores, target=1, additional_forward_args=(mask,), steps=4).auc


def collect() -> dict:
    from tests.adapters.conftest import LOADERS, make_vit_classifier

    torch.set_num_threads(1)
    results: dict = {}
    for loader_name, loader in LOADERS.items():
        for seed in SEEDS:
            try:
                model = loader.build(seed)
            except ModuleNotFoundError:
                continue
            g = torch.Generator().manual_seed(100 + seed)
            x = torch.randn(2, 3, loader.side, loader.side, generator=g)
            refs = torch.randn(3, loader.embed, generator=g)
            images = torch.randn(2, loader.embed, generator=g)
            ids, mask = loader.texts(3, seed)
            sim = cg.ImageTextSimilarity(model, text_embeds=refs)
            tsim = cg.TextImageSimilarity(model, image_embeds=images)
            for name, make in METHODS:
                base = f"{loader_name}/s{seed}/{name}"
                for tname, target in (("all", None), ("list", [1, 2])):
                    torch.manual_seed(seed)
                    maps = _run(results, f"{base}/image/{tname}", _explain, make, sim, x, target)
                    if maps is not None and tname == "list" and name in ("GradECLIP-native", "GAME", "RISE"):
                        _run(results, f"{base}/image/deletion-auc", _deletion_auc, sim, x, maps)
                        masks = torch.zeros(2, loader.side, loader.side, dtype=torch.bool)
                        masks[:, : loader.side // 2, : loader.side // 2] = True
                        _run(results, f"{base}/image/energy-pointing", cg.metrics.energy_pointing_game, maps, masks)
                for tname, target in (("all", None), ("one", 1)):
                    torch.manual_seed(seed)
                    scores = _run(results, f"{base}/text/{tname}", _explain, make, tsim, ids, target, (mask,))
                    if scores is not None and tname == "one" and name in ("GradECLIP-native", "GAME"):
                        _run(results, f"{base}/text/deletion-auc", _text_deletion_auc, tsim, ids, scores, mask)
    model = make_vit_classifier(0)
    csim = cg.ImageClassification(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    for name, make in METHODS:
        torch.manual_seed(0)
        _run(results, f"vit-classifier/s0/{name}/image/list", _explain, make, csim, x, [1, 2])
    return results


def compare(reference: dict, current: dict, atol: float) -> int:
    identical = close = 0
    bad = []
    worst = 0.0
    for key, want in reference.items():
        if key not in current:
            bad.append(f"{key}: missing")
            continue
        got = current[key]
        if isinstance(want, str) or isinstance(got, str):
            if want == got:
                identical += 1
            else:
                bad.append(f"{key}: {want!r} -> {got!r}")
            continue
        if want.shape != got.shape or want.dtype != got.dtype:
            bad.append(f"{key}: shape/dtype {tuple(want.shape)} {want.dtype} -> {tuple(got.shape)} {got.dtype}")
        elif torch.equal(want, got) or (
            want.isnan().equal(got.isnan()) and torch.equal(want.nan_to_num(), got.nan_to_num())
        ):
            identical += 1
        else:
            scale = float(want.abs().max().clamp_min(1e-12))
            err = float((want.double() - got.double()).abs().max()) / scale
            worst = max(worst, err)
            if err <= atol:
                close += 1
            else:
                bad.append(f"{key}: relative difference {err:.3g}")
    extra = sorted(set(current) - set(reference))
    summary = f"{identical} identical, {close} within {atol:g} (worst {worst:.3g}), {len(bad)} differ"
    print(f"{len(reference)} entries: {summary}")
    for line in bad:
        print("  DIFF", line)
    for key in extra:
        print("  NEW ", key)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="write the results to this file")
    group.add_argument("--compare", type=Path, help="compare against the results in this file")
    parser.add_argument("--atol", type=float, default=1e-6, help="relative tolerance for 'within' (default 1e-6)")
    args = parser.parse_args(argv)
    results = collect()
    if args.record:
        torch.save(results, args.record)
        errors = sum(isinstance(v, str) for v in results.values())
        print(f"recorded {len(results)} entries ({errors} are errors a method raises where it does not apply)")
        return 0
    return compare(torch.load(args.compare, weights_only=False), results, args.atol)


if __name__ == "__main__":
    sys.exit(main())
