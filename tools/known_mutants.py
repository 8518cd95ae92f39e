"""The hand-picked mutants: bugs that once got past the tests (and a representative set around them), kept so that
nothing they caught is lost now that mutmut (:mod:`tools.mutation`) generates the mutants of the guard code.

    python -m tools.mutation --known                  # every hand-picked mutant; writes its section of the page
    python -m tools.mutation --no-modules --known 'rise-*'   # some of them (names or shell patterns)
    python -m tools.known_mutants --list              # what each mutant changes, and its tests

Each mutant is one small textual replacement in one source file (the text to replace must occur exactly once),
made in a temporary copy of the repository, never in the tree itself. The copy is made once; for each mutant the
file is changed, the mutant's tests run there with ``pytest -x`` (the copy first on ``PYTHONPATH``), and the file is
restored. A mutant is caught when a test fails (or the tests cannot even be collected); one that passes its tests
survived. Before the mutants, every distinct test selection runs once unmutated: a selection that already fails
would catch everything, so its mutants are reported as not checked.

The list covers the seven bugs of issue 21 (metrics and baselines that the tests once let through) and a
representative set in the core of Grad-ECLIP, its fast path, the similarity wrappers, the adapters, the metrics and
the baselines: mostly outside the guard code that mutmut mutates (docs/mutants.md says which module holds each). A
mutant whose text is no longer in its file is reported as stale, to be updated here.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "captum_gradeclip"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``old`` becomes ``new`` in ``path`` (under the package); ``tests``: pytest arguments."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


M = Mutant
T_ATTR = ("tests/attr/test_grad_eclip.py",)
T_POINTING = ("tests/metrics/test_pointing.py",)
T_DELETION = ("tests/metrics/test_deletion.py",)
T_TEXT_DELETION = ("tests/metrics/test_text_deletion.py",)
T_ROBUSTNESS = ("tests/metrics/test_robustness.py",)
T_RISE = ("tests/baselines/test_rise.py",)
T_M2IB = ("tests/baselines/test_m2ib.py",)

MUTANTS: list[Mutant] = [
    # -- the seven bugs of issue 21 ---------------------------------------------------------------------------------
    M(
        "pointing-yx-swap",
        "metrics/pointing.py",
        "py, px = (peak // w).float(), (peak % w).float()",
        "px, py = (peak // w).float(), (peak % w).float()",
        T_POINTING,
        "the pointing game reads the argmax as (x, y)",
    ),
    M(
        "infidelity-plus",
        "metrics/robustness.py",
        "return noise, batch - noise",
        "return noise, batch + noise",
        T_ROBUSTNESS,
        "infidelity scores x + I instead of x - I",
    ),
    M(
        "infidelity-text-no-drop",
        "metrics/robustness.py",
        "return drop.float(), batch.masked_fill(drop, pad)",
        "return drop.float(), batch",
        T_ROBUSTNESS,
        "infidelity's text perturbation reports dropped words but keeps them",
    ),
    M(
        "word-swap-any-token",
        "metrics/robustness.py",
        "chosen = words & (words.long().cumsum(1) - 1 == pick[:, None])",
        "chosen = words.long().cumsum(1) - 1 == pick[:, None]",
        T_ROBUSTNESS,
        "sensitivity's word swap may also replace SOS, EOS or padding",
    ),
    M(
        "rise-no-p",
        "baselines/rise.py",
        "if self.masks is not None else self.p",
        "if self.masks is not None else 1.0",
        T_RISE,
        "RISE does not divide by the keep probability p",
    ),
    M(
        "rise-draw-offset",
        "baselines/rise.py",
        "min(_DRAW, self.n_masks - start)",
        "min(_DRAW, self.n_masks)",
        T_RISE,
        "RISE draws a full chunk of masks for the last chunk too",
    ),
    M(
        "rise-batch-offset",
        "baselines/rise.py",
        "saliency[start : start + per_batch] +=",
        "saliency[:per_batch] +=",
        T_RISE,
        "RISE adds every batch of images to the first images' maps",
    ),
    M(
        "text-mask-ignored",
        "adapters/base.py",
        "            valid = valid & attention_mask.bool()",
        "            valid = valid",
        (*T_ATTR, *T_TEXT_DELETION),
        "CLIP's text keys and words ignore the attention mask",
    ),
    M(
        "m2ib-minimise",
        "baselines/m2ib.py",
        "loss = (self.beta * information - score.float()).sum()",
        "loss = (self.beta * information + score.float()).sum()",
        T_M2IB,
        "M2IB minimises the target's score",
    ),
    M(
        "m2ib-column-0",
        "baselines/m2ib.py",
        "score = sim(inputs, *extra)[rows, col]",
        "score = sim(inputs, *extra)[rows, 0]",
        T_M2IB,
        "M2IB optimises column 0 whatever the target",
    ),
    # -- Grad-ECLIP ---------------------------------------------------------------------------------------------------
    M(
        "loosened-no-key-mask",
        "attr/grad_eclip.py",
        "    return lam * mask\n",
        "    return lam\n",
        T_ATTR,
        "the loosened attention is not zeroed outside the key mask",
    ),
    M(
        "loosened-min-over-all",
        "attr/grad_eclip.py",
        "r_min = r.masked_fill(~mask, math.inf).amin(dim=1, keepdim=True)",
        "r_min = r.amin(dim=1, keepdim=True)",
        T_ATTR,
        "the min-max's minimum includes masked keys",
    ),
    M(
        "loosened-flat-zero",
        "attr/grad_eclip.py",
        "lam = torch.where(flat, torch.ones_like(r),",
        "lam = torch.where(flat, torch.zeros_like(r),",
        T_ATTR,
        "a constant cosine gives weight 0 instead of 1",
    ),
    M(
        "native-one-head",
        "attr/grad_eclip.py",
        'heads = 1 if self.mode == "paper" else record.num_heads',
        "heads = 1",
        T_ATTR,
        "native mode merges the heads",
    ),
    M(
        "query-row-0",
        "attr/grad_eclip.py",
        "loosened_attention(q[rows, ctx.query_index], k, heads, ctx.key_mask)",
        "loosened_attention(q[rows, 0], k, heads, ctx.key_mask)",
        T_ATTR,
        "the loosened attention uses the query of token 0, not the pooled one (text: EOS)",
    ),
    M(
        "text-relu-per-layer",
        "attr/grad_eclip.py",
        "return torch.relu(torch.stack(layer_maps).sum(0))  # text",
        "return torch.stack([torch.relu(m) for m in layer_maps]).sum(0)  # text",
        T_ATTR,
        "text scores apply the ReLU per block before the sum",
    ),
    M(
        "image-relu-after-sum",
        "attr/grad_eclip.py",
        "return torch.stack([torch.relu(m) for m in layer_maps]).sum(0)\n",
        "return torch.relu(torch.stack(layer_maps).sum(0))\n",
        T_ATTR,
        "image maps of several blocks sum before the ReLU",
    ),
    M(
        "grad-at-row-0",
        "attr/base.py",
        "per_target.append([g[rows, ctx.query_index] for g in grads])",
        "per_target.append([g[rows, 0] for g in grads])",
        T_ATTR,
        "the channel weights are the gradient at token 0, not at the pooled token",
    ),
    M(
        "output-mask-dropped",
        "attr/base.py",
        "return maps * ctx.output_mask[:, None, :].to(maps.dtype)",
        "return maps",
        T_ATTR,
        "SOS, EOS and padding keep their scores",
    ),
    # -- the fast path --------------------------------------------------------------------------------------------
    M(
        "fast-no-residual",
        "adapters/base.py",
        "y = token + (o if layer_scale is None else layer_scale[0](o))",
        "y = o if layer_scale is None else layer_scale[0](o)",
        T_ATTR,
        "the fast path's pooled tail drops the residual",
    ),
    M(
        "fast-scale",
        "ops.py",
        "F.scaled_dot_product_attention(qh, kh, vh, scale=scale)",
        "F.scaled_dot_product_attention(qh, kh, vh, scale=2 * scale)",
        T_ATTR,
        "the fast path's pooled attention doubles the logit scale",
    ),
    M(
        "fast-jacobian-flip",
        "attr/base.py",
        'weights = torch.einsum("enk,enc->knc", grad_embeds, d_embed)',
        'weights = torch.einsum("enk,enc->knc", grad_embeds.flip(2), d_embed)',
        T_ATTR,
        "the fast path's Jacobian branch (more targets than embedding dims) pairs targets wrongly",
    ),
    # -- the wrappers ---------------------------------------------------------------------------------------------
    M(
        "cosine-unnormalised",
        "wrappers.py",
        "cos = F.normalize(embeds, dim=-1) @ refs.T",
        "cos = embeds @ refs.T",
        ("tests/test_wrappers.py",),
        "the cosine score does not normalise the query embedding",
    ),
    M(
        "logit-bias-sign",
        "wrappers.py",
        "logits = logits + bias.to(cos.dtype)",
        "logits = logits - bias.to(cos.dtype)",
        ("tests/test_wrappers.py", "tests/adapters/test_hf_siglip.py"),
        "SigLIP's logit bias is subtracted",
    ),
    M(
        "softmax-dim",
        "wrappers.py",
        '        return logits if self.score == "logit" else logits.softmax(dim=-1)\n\n    def explained_blocks',
        '        return logits if self.score == "logit" else logits.softmax(dim=0)\n\n    def explained_blocks',
        ("tests/test_wrappers.py",),
        "the softmax score normalises over the batch, not the references",
    ),
    # -- the metrics ----------------------------------------------------------------------------------------------
    M(
        "insertion-is-deletion",
        "metrics/deletion.py",
        "torch.where(changed, x[i], fill[i]) if insert else",
        "torch.where(changed, x[i], fill[i]) if not insert else",
        T_DELETION,
        "insertion and deletion swap their images",
    ),
    M(
        "ranks-ascending",
        "metrics/_common.py",
        "argsort(dim=-1, descending=True, stable=True)",
        "argsort(dim=-1, descending=False, stable=True)",
        (*T_DELETION, *T_TEXT_DELETION),
        "the least relevant pixels and words are removed first",
    ),
    M(
        "mean-baseline-over-channels",
        "metrics/deletion.py",
        "return inputs.mean((2, 3), keepdim=True).expand_as(inputs)",
        "return inputs.mean((1, 2, 3), keepdim=True).expand_as(inputs)",
        T_DELETION,
        'the "mean" baseline averages over the channels too',
    ),
    M(
        "normalisation-times-std",
        "metrics/deletion.py",
        "return (pixels - mean) / std",
        "return (pixels - mean) * std",
        T_DELETION,
        "the black and random baselines multiply by the std",
    ),
    M(
        "topk-off-by-one",
        "metrics/_common.py",
        "return ((s > s.gather(1, col[:, None])).sum(1) < k).to(s.dtype)",
        "return ((s > s.gather(1, col[:, None])).sum(1) <= k).to(s.dtype)",
        T_DELETION,
        "top-k counts k + 1 columns",
    ),
    M(
        "auc-mean",
        "metrics/_common.py",
        "torch.trapezoid(values, steps.to(values), dim=-1)",
        "values.mean(-1)",
        (*T_DELETION, *T_TEXT_DELETION),
        "the AUC is the mean of the curve, not its trapezoid area",
    ),
    M(
        "text-insert-specials",
        "metrics/text_deletion.py",
        "removed = top if not insert else words[i] & ~top",
        "removed = top if not insert else ~top",
        T_TEXT_DELETION,
        "text insertion also removes SOS, EOS and padding",
    ),
    M(
        "pad-keeps-mask",
        "metrics/text_deletion.py",
        "attention_mask.masked_fill(removed, 0)",
        "attention_mask",
        T_TEXT_DELETION,
        'text deletion\'s "pad" mode leaves the removed tokens attended',
    ),
    M(
        "energy-abs",
        "metrics/pointing.py",
        "positive = _maps_for(attributions, regions, interpolate_mode).clamp_min(0)",
        "positive = _maps_for(attributions, regions, interpolate_mode).abs()",
        T_POINTING,
        "the energy pointing game counts negative mass",
    ),
    M(
        "box-one-pixel-more",
        "metrics/pointing.py",
        "(ys[None, :] <= b[:, 3:4])",
        "(ys[None, :] <= b[:, 3:4] + 1)",
        T_POINTING,
        "a box reaches one row past y1",
    ),
    # -- the baselines --------------------------------------------------------------------------------------------
    M(
        "rollout-no-identity",
        "baselines/rollout.py",
        "a_hat = a.mean(1) + eye",
        "a_hat = a.mean(1)",
        ("tests/baselines/test_rollout.py",),
        "rollout leaves out the residual identity",
    ),
    M(
        "rollout-order",
        "baselines/rollout.py",
        "out = a_hat if out is None else a_hat @ out",
        "out = a_hat if out is None else out @ a_hat",
        ("tests/baselines/test_rollout.py",),
        "rollout multiplies the blocks in the wrong order",
    ),
    M(
        "raw-attention-max",
        "baselines/raw_attention.py",
        "record_probs(record, allowed_keys(sim, inputs, extra)).mean(1)",
        "record_probs(record, allowed_keys(sim, inputs, extra)).amax(1)",
        ("tests/baselines/test_raw_attention.py",),
        "raw attention takes the maximum over heads",
    ),
    M(
        "game-no-clamp",
        "baselines/game.py",
        "relevance = relevance + (g * a).clamp_min(0).mean(1) @ relevance",
        "relevance = relevance + (g * a).mean(1) @ relevance",
        ("tests/baselines/test_game.py",),
        "GAME keeps negative gradient x attention",
    ),
    M(
        "gradcam-all-tokens",
        "baselines/grad_cam.py",
        "alpha = (grad * mask).sum(1) / mask.sum(1).clamp_min(1)",
        "alpha = grad.sum(1) / mask.sum(1).clamp_min(1)",
        ("tests/baselines/test_grad_cam.py",),
        "Grad-CAM's channel weights include CLS (or SOS/EOS) gradients",
    ),
    M(
        "surgery-no-mean",
        "baselines/clip_surgery.py",
        "return (feats - feats.mean(2, keepdim=True)).sum(-1)",
        "return feats.sum(-1)",
        ("tests/baselines/test_clip_surgery.py",),
        "CLIP Surgery does not subtract the mean over texts",
    ),
    M(
        "causal-mask-reversed",
        "baselines/_common.py",
        "keys = keys.tril()",
        "keys = keys.triu()",
        ("tests/baselines/test_rollout.py", "tests/baselines/test_raw_attention.py", "tests/baselines/test_game.py"),
        "the text baselines let tokens attend to later ones",
    ),
    M(
        "m2ib-capacity-sign",
        "baselines/m2ib.py",
        "- F.logsigmoid(-alpha)",
        "+ F.logsigmoid(-alpha)",
        T_M2IB,
        "the capacity adds log(1 - lambda) instead of subtracting it",
    ),
    # -- where a warning points: mutmut's trampolines add call frames, so these are checked here, outside it --------
    M(
        "cut-warning-frame-deeper",
        "wrappers.py",
        '(the rest is cut)",\n                stacklevel=4,',
        '(the rest is cut)",\n                stacklevel=5,',
        ("tests/test_wrappers_guards.py::test_a_cut_text_warns_at_the_users_line",),
        "the cut-text warning points one frame above the user's line",
    ),
    M(
        "cut-warning-frame-here",
        "wrappers.py",
        '(the rest is cut)",\n                stacklevel=4,',
        '(the rest is cut)",',
        ("tests/test_wrappers_guards.py::test_a_cut_text_warns_at_the_users_line",),
        "the cut-text warning points at the wrappers' own line (no stack level)",
    ),
    M(
        "unknown-words-frame-deeper",
        "vocabulary.py",
        "tokenizer: object, stacklevel: int = 3)",
        "tokenizer: object, stacklevel: int = 4)",
        ("tests/test_vocabulary_guards.py::test_the_warning_names_the_words_and_points_at_the_caller",),
        "the unknown-word warning points one frame above the caller of the API",
    ),
    M(
        "unknown-words-frame-here",
        "vocabulary.py",
        "UserWarning, stacklevel=stacklevel)",
        "UserWarning)",
        ("tests/test_vocabulary_guards.py::test_the_warning_names_the_words_and_points_at_the_caller",),
        "the unknown-word warning points at the vocabulary module's own line (no stack level)",
    ),
]


@dataclass
class Result:
    mutant: Mutant
    status: str  #: "caught", "survived", "stale", "unchecked", "timeout"
    detail: str
    seconds: float


def source(mutant: Mutant, root: Path = ROOT) -> Path:
    return root / PACKAGE / mutant.path


def check(mutant: Mutant, root: Path = ROOT) -> str | None:
    """Why ``mutant`` cannot be planted in the tree at ``root`` (``None`` when it can)."""
    path = source(mutant, root)
    if not path.is_file():
        return f"{mutant.path} does not exist"
    count = path.read_text().count(mutant.old)
    if count != 1:
        return f"the text to replace occurs {count} times in {mutant.path} (must be once)"
    missing = [t for t in mutant.tests if not (root / t.split("::")[0]).exists()]
    return f"missing tests: {', '.join(missing)}" if missing else None


def select(patterns: list[str]) -> list[Mutant]:
    if not patterns:
        return list(MUTANTS)
    chosen = [m for m in MUTANTS if any(fnmatch.fnmatchcase(m.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(m.name, p) for m in MUTANTS)]
    if unknown:
        raise SystemExit(f"no mutant matches {', '.join(unknown)}; see --list")
    return chosen


def copy_tree(destination: Path) -> None:
    """The repository's files (tracked and untracked, not ignored) into ``destination``; all files without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in listed.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        shutil.copytree(ROOT, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return
    for name in files:
        src = ROOT / name
        if src.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, destination / name)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str, float]:
    """``(pytest's exit code, its output, seconds)``; exit code -1 on timeout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        return -1, out, time.perf_counter() - start
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return ""


def run(mutants: list[Mutant], timeout: float, clean_check: bool, echo: bool) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        probe = subprocess.run(
            [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
            cwd=tree,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            capture_output=True,
            text=True,
        )
        if not probe.stdout.strip().startswith(str(tree.resolve())) and not probe.stdout.strip().startswith(tmp):
            raise SystemExit(f"the copy's package is not the one imported: {probe.stdout.strip() or probe.stderr}")
        broken: dict[tuple[str, ...], str] = {}
        if clean_check:
            for tests in dict.fromkeys(m.tests for m in mutants if check(m) is None):
                code, output, seconds = run_tests(tree, tests, timeout)
                if code != 0:
                    broken[tests] = f"fails unmutated ({first_failure(output) or f'exit {code}'})"
                if echo:
                    print(f"unmutated {' '.join(tests)}: exit {code} in {seconds:.1f} s", flush=True)
        for mutant in mutants:
            problem = check(mutant, tree)
            if problem is not None:
                results.append(Result(mutant, "stale", problem, 0.0))
            elif mutant.tests in broken:
                results.append(Result(mutant, "unchecked", broken[mutant.tests], 0.0))
            else:
                path = source(mutant, tree)
                original = path.read_text()
                path.write_text(original.replace(mutant.old, mutant.new))
                try:
                    code, output, seconds = run_tests(tree, mutant.tests, timeout)
                finally:
                    path.write_text(original)
                if code == -1:
                    results.append(Result(mutant, "timeout", f"over {timeout:.0f} s", seconds))
                elif code == 0:
                    results.append(Result(mutant, "survived", "every test passed", seconds))
                elif code in (1, 2):  # tests failed, or collection failed (an import error)
                    results.append(Result(mutant, "caught", first_failure(output) or f"exit {code}", seconds))
                else:
                    results.append(Result(mutant, "unchecked", f"pytest exit {code}", seconds))
            if echo:
                r = results[-1]
                print(f"{r.mutant.name:30} {r.status:9} {r.seconds:6.1f} s  {r.detail}", flush=True)
    return results


HEADER = "| mutant | file | what it plants | tests run | caught | by | time (s) |\n|---|---|---|---|---|---|---:|"


def row(r: Result) -> str:
    """The table row of one result."""
    m = r.mutant
    tests = ", ".join(t.removeprefix("tests/") for t in m.tests)
    caught = {"caught": "yes", "timeout": "yes (timeout)", "survived": "**no**"}.get(r.status, r.status)
    by = r.detail.removeprefix("tests/") if r.status == "caught" else ("" if r.status == "survived" else r.detail)
    return f"| `{m.name}` | `{m.path}` | {m.what} | {tests} | {caught} | {by} | {r.seconds:.1f} |"


def table(results: list[Result], previous: str = "") -> str:
    """The markdown table of ``results``; with ``previous`` (an earlier table), the rows of the mutants not rerun
    are kept from it, so that a rerun of some mutants updates their rows only. Rows follow :data:`MUTANTS`."""
    known = {m.name for m in MUTANTS}
    rows = {}
    for line in previous.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match and match[1] in known:
            rows[match[1]] = line
    rows.update({r.mutant.name: row(r) for r in results})
    ordered = [rows[m.name] for m in MUTANTS if m.name in rows]
    caught = sum(line.split(" | ")[4].startswith("yes") for line in ordered)
    return "\n".join([HEADER, *ordered, "", f"{caught} of {len(ordered)} mutants caught."]) + "\n"


KNOWN_INTRO = """Each row is one bug planted in a temporary copy of the repository (one textual replacement in one
source file of `captum_gradeclip/`); the named tests then run there with `pytest -x`. *Caught* means a test
failed, and *by* names the first one. The list holds the seven bugs that issue 21 found the tests letting through
(`pointing-yx-swap`, `infidelity-plus`, the three `rise-*`, `text-mask-ignored`, `m2ib-minimise`,
`m2ib-column-0`) and a representative set in Grad-ECLIP, its fast path, the wrappers, the metrics and the
baselines, all outside the functions mutmut mutates above. `python -m tools.known_mutants --list` shows every
replacement. The time is the wall-clock time of the mutant's test run, pytest's start-up included, on a 2-core
machine shared with other jobs.

"""


def main(argv: list[str] | None = None) -> list[Result]:
    """Runs the mutants named in ``argv`` (all by default) and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run: names or shell patterns (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default: 600)")
    parser.add_argument("--no-clean-check", action="store_true", help="skip the unmutated run of each test selection")
    args = parser.parse_args(argv)
    mutants = select(args.names)
    if args.list:
        for m in mutants:
            problem = check(m)
            print(f"{m.name}  [{m.path}]  {m.what}{'  (STALE: ' + problem + ')' if problem else ''}")
            print(f"    - {m.old.strip()}\n    + {m.new.strip()}\n    tests: {' '.join(m.tests)}")
        return []
    results = run(mutants, args.timeout, not args.no_clean_check, echo=True)
    print()
    print(table(results), end="")
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r.status in ("caught", "timeout") for r in main()) else 1)
