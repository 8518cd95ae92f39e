"""Mutation testing of the code that guards users, with mutmut; writes ``docs/mutants.md``.

    python -m tools.mutation                              # every configured module (see docs/mutants.md for the time)
    python -m tools.mutation --module images --module contract
    python -m tools.mutation --write docs/mutants.md      # a rerun of some modules updates their rows only
    python -m tools.mutation --known                      # also the hand-picked mutants of tools/known_mutants.py
    python -m tools.mutation --no-modules --known 'rise-*'   # only some hand-picked mutants (names or patterns)
    python -m tools.mutation --list                       # the modules, their functions and their tests
    python -m tools.mutation --keep DIR                   # keep each module's scratch copy (mutmut show/browse)
    python -m tools.mutation --keep DIR --resume          # rerun only the mutants not detected in DIR's copies

mutmut (configured in ``setup.cfg``'s ``[mutmut]`` section) generates every mutant of a file: it rewrites each
function into a trampoline that calls the original or one of its mutated copies, so one warm process (torch
imported once) forks per mutant and runs only the tests that reached that function. For each module of
:data:`MODULES` this script copies the repository to a scratch folder, narrows the configuration there to the
module's file and its mirrored tests, runs ``mutmut run`` on the mutants of the module's guard functions only, and
reads the verdicts back. A mutant is *killed* when a test fails, *survived* when all pass, *timeout* when the tests
ran far longer than unmutated (counted as detected). The survivors listed in :data:`EQUIVALENT` change no
behaviour anyone can observe: they are reported with their reason and left out of the score, and one whose
mutation no longer matches its recorded line is reported as stale. Every other survivor is listed on the page with
its diff. It is no part of CI (it takes tens of minutes on two cores): rerun it after changing guard code or its
tests.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python tools/mutation.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import known_mutants
from tools.known_mutants import PACKAGE, ROOT


@dataclass(frozen=True)
class Module:
    """One configured module: ``functions`` of ``path`` (under the package) are mutated, ``tests`` run on them."""

    name: str
    path: str
    functions: tuple[str, ...]  #: ``name`` or ``Class.method``
    tests: tuple[str, ...]  #: test files, or test ids (``file::name``)
    what: str

    def meta(self, scratch: Path) -> Path:
        """Where mutmut keeps this module's verdicts in the scratch copy ``scratch``."""
        return scratch / "mutants" / PACKAGE / (self.path + ".meta")

    def globs(self) -> list[str]:
        """mutmut's names of the mutants of :attr:`functions` (``pkg.mod.x_fn__mutmut_3``, ``...xǁCǁm__mutmut_3``)."""
        module = f"{PACKAGE}.{self.path.removesuffix('.py').replace('/', '.')}"
        names = ["xǁ" + "ǁ".join(f.split(".")) if "." in f else "x_" + f for f in self.functions]
        return [f"{module}.{n}__mutmut_*" for n in names]


MODULES: list[Module] = [
    Module(
        "images",
        "images.py",
        ("resolve_inside", "_to_rgb"),
        ("tests/test_images.py", "tests/test_images_guards.py"),
        "confinement to --images and image reading",
    ),
    Module(
        "store",
        "runs/store.py",
        ("_check_images_unchanged",),
        # not tests/test_runs.py: its unmutated run fails under mutmut (which then checks no mutant)
        ("tests/test_store_safety.py", "tests/test_store_guards.py"),
        "the dataset store's resume checks",
    ),
    Module(
        "results",
        "results.py",
        ("read_part", "ResultStore.differences"),
        # not tests/test_store_safety.py: its runs of the dataset take ~30 s, for each mutant that survives
        ("tests/test_results.py", "tests/test_results_guards.py"),
        "the store's integrity checks and its comparison",
    ),
    Module(
        "contract",
        "attr/contract.py",
        ("resolve_wrapper", "check_layer_input", "check_blocks", "check_options"),
        # the contract tests that reach these checks' failures, not all 427: every explanation resolves its wrapper,
        # so with the whole file each mutant of resolve_wrapper reran every test (the coverage pass took 20+ min)
        (
            "tests/attr/test_contract_guards.py",
            *(
                f"tests/test_captum_contract.py::{name}"
                for name in (
                    "test_forward_func_forms",
                    "test_invalid_module_in_place_of_the_explained_block",
                    "test_attribute_to_layer_input",
                    "test_device_ids_are_refused_unless_the_data_parallel_own",
                    "test_device_ids_that_are_a_strict_subset_or_another_order_of_the_data_parallel_own_are_refused",
                    "test_real_data_parallel_runs_on_the_module_device",
                )
            ),
        ),
        "the Captum contract checks",
    ),
    Module(
        "wrappers",
        "wrappers.py",
        ("require", "_fail", "_check_text", "_warn_cut"),
        ("tests/test_wrappers.py", "tests/test_wrappers_guards.py"),
        "the wrappers' data checks: deferred and text checks",
    ),
    Module(
        "fast-path",
        "attr/base.py",
        ("_hooks_the_tail_would_bypass", "AttentionAttribution._fast_path_applies"),
        ("tests/attr/test_grad_eclip.py", "tests/attr/test_base_guards.py"),
        "the fast path's hook checks",
    ),
    Module(
        "finetune",
        "finetune/regions.py",
        ("region_phrase_loss", "anchor_distance"),
        ("tests/finetune/test_regions.py", "tests/finetune/test_regions_guards.py"),
        "the fine-tuning loss terms",
    ),
    Module(
        "words",
        "vocabulary.py",
        ("unknown_words", "warn_unknown_words"),
        ("tests/test_vocabulary.py", "tests/test_vocabulary_guards.py"),
        "unknown-word detection",
    ),
]

#: Survivors that change nothing observable: mutmut's name -> (the mutated line as ``mutmut show`` prints it,
#: stripped, and why it is equivalent). A changed function renumbers its mutants: an entry whose line no longer
#: matches is reported as stale, not trusted.
_ONE_TABLE = "the three columns of one table always have the same length, so strict= never fires"
_DIM = "dim 1 (the default) and -1 are the same axis: the function refuses inputs that are not 2-D"
_FRAME = "a data check's warning points inside the package or torch either way (forward, Module._call_impl)"
_EMPTY = "`initial` only matters for an empty array, and a decoded image has pixels"
_MODE_L = "Image.fromarray infers mode L from a 2-D uint8 array, the mode given"
_NO_CALL = "the check hooks the block and unhooks it with no forward pass: the hook's callback is never called"
_THREADS = "pyarrow reads the same values with threads or without (use_threads only splits the work)"
_TEXT_DIM = "dim 1 and -1 are the same axis: `input_ids` is checked to be (N, L) and the mask to have its shape"
_TOKENIZED = "a tokenizer gives one row of ids and offsets per text and one offset per id, so strict= never fires"
_USER_WARNING = "warnings.warn's category None, or none given, is UserWarning, the category given"
_NON_FINITE = "load_image reports _to_rgb's ValueError by its type only (`corrupt image: x.tiff (ValueError)`)"
EQUIVALENT: dict[str, tuple[str, str]] = {
    "captum_gradeclip.images.x__to_rgb__mutmut_16": (
        "values = values.astype(None)",
        "numpy's astype(None) is astype(float64)",
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_19": ("raise ValueError(None)", _NON_FINITE),
    "captum_gradeclip.images.x__to_rgb__mutmut_20": ('raise ValueError("XXnon-finite pixel valuesXX")', _NON_FINITE),
    "captum_gradeclip.images.x__to_rgb__mutmut_21": ('raise ValueError("NON-FINITE PIXEL VALUES")', _NON_FINITE),
    "captum_gradeclip.images.x__to_rgb__mutmut_43": (
        "top = 65535 if values.max(initial=None) <= 65535 and values.min(initial=0) >= 0 else None",
        _EMPTY,
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_44": (
        "top = 65535 if values.max(initial=1) <= 65535 and values.min(initial=0) >= 0 else None",
        "max(initial=1) differs from the maximum only where every value is below 1; both are then <= 65535",
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_47": (
        "top = 65535 if values.max(initial=0) <= 65535 and values.min(initial=None) >= 0 else None",
        _EMPTY,
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_48": (
        "top = 65535 if values.max(initial=0) <= 65535 and values.min(initial=1) >= 0 else None",
        "min(initial=1) differs from the minimum only where every value is above 1; both are then >= 0",
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_53": (
        "values = values.astype(None)",
        "numpy's astype(None) is astype(float64)",
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_67": (
        "values = values.astype(None) / top",
        "numpy's astype(None) is astype(float64)",
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_70": (
        "image = Image.fromarray(np.round(values * 255).astype(np.uint8), mode=None)",
        _MODE_L,
    ),
    "captum_gradeclip.images.x__to_rgb__mutmut_72": (
        "image = Image.fromarray(np.round(values * 255).astype(np.uint8), )",
        _MODE_L,
    ),
    "captum_gradeclip.runs.store.x__check_images_unchanged__mutmut_3": (
        "table = part.table(None).to_pydict()",
        "reads every column of the part, but only the item, size and time columns are looked at",
    ),
    "captum_gradeclip.runs.store.x__check_images_unchanged__mutmut_13": (
        'for index, size, mtime in zip(table["item"], table["image_bytes"], table["image_mtime_ns"], strict=None):',
        _ONE_TABLE,
    ),
    "captum_gradeclip.runs.store.x__check_images_unchanged__mutmut_17": (
        'for index, size, mtime in zip(table["item"], table["image_bytes"], table["image_mtime_ns"], ):',
        _ONE_TABLE,
    ),
    "captum_gradeclip.runs.store.x__check_images_unchanged__mutmut_24": (
        'for index, size, mtime in zip(table["item"], table["image_bytes"], table["image_mtime_ns"], strict=False):',
        _ONE_TABLE,
    ),
    "captum_gradeclip.runs.store.x__check_images_unchanged__mutmut_30": (
        'changed[items[index].image] = ""',
        "the dict's values are never read: it is an ordered set of the changed files",
    ),
    "captum_gradeclip.attr.base.x__hooks_the_tail_would_bypass__mutmut_46": (
        'return any(hooked(sim.get_submodule(".".join(parts[:i]))) for i in range(len(parts) + 2))',
        "parts[:len(parts) + 1] is parts: the layer itself is checked twice",
    ),
    "captum_gradeclip.finetune.regions.x_region_phrase_loss__mutmut_19": (
        "logits = scale * F.normalize(regions, ) @ F.normalize(phrase_embeds, dim=-1).T",
        _DIM,
    ),
    "captum_gradeclip.finetune.regions.x_region_phrase_loss__mutmut_20": (
        "logits = scale * F.normalize(regions, dim=+1) @ F.normalize(phrase_embeds, dim=-1).T",
        _DIM,
    ),
    "captum_gradeclip.finetune.regions.x_region_phrase_loss__mutmut_25": (
        "logits = scale * F.normalize(regions, dim=-1) @ F.normalize(phrase_embeds, ).T",
        _DIM,
    ),
    "captum_gradeclip.finetune.regions.x_region_phrase_loss__mutmut_26": (
        "logits = scale * F.normalize(regions, dim=-1) @ F.normalize(phrase_embeds, dim=+1).T",
        _DIM,
    ),
    "captum_gradeclip.finetune.regions.x_anchor_distance__mutmut_15": (
        "return (1 - F.cosine_similarity(embeds, frozen.detach(), )).mean()",
        _DIM,
    ),
    "captum_gradeclip.finetune.regions.x_anchor_distance__mutmut_16": (
        "return (1 - F.cosine_similarity(embeds, frozen.detach(), dim=+1)).mean()",
        _DIM,
    ),
    "captum_gradeclip.wrappers.x__fail__mutmut_9": (
        "warnings.warn(text, )",
        _FRAME,
    ),
    "captum_gradeclip.wrappers.x__fail__mutmut_10": (
        "warnings.warn(text, stacklevel=5)",
        _FRAME,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_36": (
        'for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"], strict=None):',
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_40": (
        'for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"], ):',
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_45": (
        'for text, ids, offsets in zip(texts, batch["input_ids"], batch["offset_mapping"], strict=False):',
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_48": (
        "for token, (start, end) in zip(ids, offsets, strict=None):",
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_51": (
        "for token, (start, end) in zip(ids, offsets, ):",
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_unknown_words__mutmut_52": (
        "for token, (start, end) in zip(ids, offsets, strict=False):",
        _TOKENIZED,
    ),
    "captum_gradeclip.vocabulary.x_warn_unknown_words__mutmut_8": (
        "warnings.warn(unknown_words_message(words, is_shapes_clip(tokenizer)), None, stacklevel=stacklevel)",
        _USER_WARNING,
    ),
    "captum_gradeclip.vocabulary.x_warn_unknown_words__mutmut_11": (
        "warnings.warn(unknown_words_message(words, is_shapes_clip(tokenizer)), stacklevel=stacklevel)",
        _USER_WARNING,
    ),
    "captum_gradeclip.wrappers.x__check_text__mutmut_63": (
        "require((attention_mask.sum(dim=+1) >= 2).all(), empty)",
        _TEXT_DIM,
    ),
    "captum_gradeclip.wrappers.x__check_text__mutmut_82": ("ended = present.any(dim=+1)", _TEXT_DIM),
    "captum_gradeclip.attr.contract.x_check_blocks__mutmut_2": ("with wrapper.adapter.probe(block, None):", _NO_CALL),
    "captum_gradeclip.attr.contract.x_check_blocks__mutmut_5": (
        "with wrapper.adapter.probe(block, lambda _record, o: None):",
        _NO_CALL,
    ),
    "captum_gradeclip.results.x_read_part__mutmut_67": (
        'items = parquet.read(columns=["item"], use_threads=None).column(0).to_numpy()',
        _THREADS,
    ),
    "captum_gradeclip.results.x_read_part__mutmut_69": (
        'items = parquet.read(columns=["item"], ).column(0).to_numpy()',
        _THREADS,
    ),
    "captum_gradeclip.results.x_read_part__mutmut_72": (
        'items = parquet.read(columns=["item"], use_threads=True).column(0).to_numpy()',
        _THREADS,
    ),
    "captum_gradeclip.results.xǁResultStoreǁdifferences__mutmut_27": (
        "a, b = mine.table(None), theirs.table(columns)",
        "reads every column of the part, but only the compared columns are looked at",
    ),
    "captum_gradeclip.results.xǁResultStoreǁdifferences__mutmut_28": (
        "a, b = mine.table(columns), theirs.table(None)",
        "reads every column of the part, but only the compared columns are looked at",
    ),
}


#: Survivors that only mutmut cannot see: where a warning points (its ``stacklevel``). mutmut's trampolines add
#: call frames, so the tests that check a warning's line skip under mutmut; the same bug, planted as a hand-picked
#: mutant of :mod:`tools.known_mutants`, runs those tests outside it. mutmut's name -> (its mutated line, the
#: hand-picked mutant). Counted as detected where the line still matches.
BY_HAND: dict[str, tuple[str, str]] = {
    "captum_gradeclip.wrappers.x__warn_cut__mutmut_6": (")", "cut-warning-frame-here"),
    "captum_gradeclip.wrappers.x__warn_cut__mutmut_7": ("stacklevel=5,", "cut-warning-frame-deeper"),
    "captum_gradeclip.vocabulary.x_warn_unknown_words__mutmut_1": (
        "def warn_unknown_words(texts: Sequence[str], tokenizer: object, stacklevel: int = 4) -> list[str]:",
        "unknown-words-frame-deeper",
    ),
    "captum_gradeclip.vocabulary.x_warn_unknown_words__mutmut_12": (
        "warnings.warn(unknown_words_message(words, is_shapes_clip(tokenizer)), UserWarning, )",
        "unknown-words-frame-here",
    ),
}


@dataclass
class Outcome:
    """The verdicts of one module's run."""

    module: Module
    status: dict[str, str] = field(default_factory=dict)  #: mutant -> killed, survived, timeout, no tests, ...
    diffs: dict[str, str] = field(default_factory=dict)  #: survivor -> its mutated line(s)
    seconds: float = 0.0
    error: str = ""
    resumed: bool = False  #: only the mutants not detected before ran again (``--resume``)

    def count(self, *statuses: str) -> int:
        return sum(s in statuses for s in self.status.values())

    def equivalent(self) -> dict[str, str]:
        """The survivors recorded in :data:`EQUIVALENT` whose mutated line still matches: name -> reason."""
        found = {}
        for name, status in self.status.items():
            entry = EQUIVALENT.get(name)
            if status == "survived" and entry is not None and entry[0] == self.diffs.get(name, "").strip():
                found[name] = entry[1]
        return found

    def by_hand(self) -> dict[str, str]:
        """The survivors recorded in :data:`BY_HAND` whose mutated line still matches: name -> hand-picked mutant."""
        return {
            name: BY_HAND[name][1]
            for name, status in self.status.items()
            if status == "survived" and name in BY_HAND and BY_HAND[name][0] == self.diffs.get(name, "").strip()
        }

    def score(self) -> float | None:
        """Detected (killed, timeout, or by a hand-picked mutant) over generated less equivalent."""
        counted = len(self.status) - len(self.equivalent())
        return (self.count("killed", "timeout") + len(self.by_hand())) / counted if counted else None


def select(names: list[str]) -> list[Module]:
    """The modules named (names or shell patterns); every module when ``names`` is empty."""
    if not names:
        return list(MODULES)
    unknown = [n for n in names if not any(fnmatch.fnmatchcase(m.name, n) for m in MODULES)]
    if unknown:
        raise SystemExit(f"no module matches {', '.join(unknown)}; known: {', '.join(m.name for m in MODULES)}")
    return [m for m in MODULES if any(fnmatch.fnmatchcase(m.name, n) for n in names)]


def narrowed_config(text: str, module: Module) -> str:
    """``setup.cfg``'s text with its ``[mutmut]`` section narrowed to ``module``'s file and tests."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if not parser.has_section("mutmut"):
        raise SystemExit("setup.cfg has no [mutmut] section")
    parser.set("mutmut", "only_mutate", "\n" + f"{PACKAGE}/{module.path}")
    parser.set("mutmut", "pytest_add_cli_args_test_selection", "\n" + "\n".join(module.tests))
    out = []
    for section in parser.sections():
        out.append(f"[{section}]")
        out += [f"{key} = {value}".replace("\n", "\n    ") for key, value in parser.items(section)]
        out.append("")
    return "\n".join(out)


def status_of(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def mutated_lines(tree: Path, name: str, env: dict[str, str]) -> str:
    """The ``+`` lines of ``mutmut show name`` (the mutated code), joined by `` / ``."""
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name], cwd=tree, env=env, capture_output=True, text=True
    ).stdout
    lines = [line[1:].strip() for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(lines)


def kept_outcome(module: Module, keep: Path) -> Outcome:
    """The verdicts recorded in the copy that ``--keep`` left for ``module``, without running anything (a run
    stopped halfway leaves its unchecked mutants as *not checked*, and no time: its row says *stopped*)."""
    outcome = Outcome(module)
    scratch = keep / f"mutation-{module.name}"
    meta = module.meta(scratch)
    if not meta.is_file():
        outcome.error = f"no copy kept in {keep}"
        return outcome
    outcome.status = verdicts(meta, module)
    if all(s == "not checked" for s in outcome.status.values()):
        outcome.error, outcome.status = "stopped before any mutant was checked", {}
        return outcome
    seconds = scratch / "mutation-seconds"  # absent where the run was stopped
    if seconds.is_file():
        recorded = seconds.read_text().split()
        outcome.seconds, outcome.resumed = float(recorded[0]), recorded[1:] == ["resumed"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, status in outcome.status.items():
        if status not in ("killed", "timeout", "not checked"):
            outcome.diffs[name] = mutated_lines(scratch, name, env)
    return outcome


def run_module(module: Module, max_children: int, keep: Path | None, echo: bool, resume: bool = False) -> Outcome:
    """Runs mutmut on ``module`` in a scratch copy of the repository.

    With ``keep``, the copy is ``keep/mutation-<module>`` and stays. With ``resume`` too, a copy kept by an earlier
    run is refreshed with the current files and only its mutants not yet detected run again: mutmut finds the new
    tests and measures which functions they reach. The earlier detections are kept where the mutated function's
    code is unchanged (see :func:`kept_verdicts`): more tests cannot let a killed mutant survive.
    """
    outcome = Outcome(module)
    if keep is not None:
        scratch = keep / f"mutation-{module.name}"
        resumed = resume and module.meta(scratch).is_file()
        if not resumed:
            shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch, resumed = Path(tempfile.mkdtemp(prefix=f"mutation-{module.name}-")), False
    try:
        known_mutants.copy_tree(scratch)
        tests = tuple(t for t in module.tests if (scratch / t.split("::")[0]).exists())  # a file or a test's id
        if not tests:
            outcome.error = f"none of its tests exists: {', '.join(module.tests)}"
            return outcome
        narrowed = Module(module.name, module.path, module.functions, tests, module.what)
        (scratch / "setup.cfg").write_text(narrowed_config((ROOT / "setup.cfg").read_text(), narrowed))
        meta = module.meta(scratch)
        names = module.globs()
        before: dict = {}
        if resumed:
            before = json.loads(meta.read_text())
            names = [k for k, s in verdicts(meta, module).items() if s not in ("killed", "timeout")]
            outcome.resumed = True
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts its mutants/ first
        start = time.perf_counter()
        done = None
        log, tried = "", set(names)
        while names:
            command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
            done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
            log += done.stdout + done.stderr
            names = []
            if before and meta.is_file():
                # a function changed since the earlier run: its earlier detections are void (and its mutants may be
                # renumbered), so every mutant of it still unchecked runs now
                kept = kept_verdicts(before, json.loads(meta.read_text()), verdicts(meta, module))
                names = [k for k, s in kept.items() if s == "not checked" and k not in tried]
                tried |= set(names)
        (scratch / "mutmut.log").write_text(log)
        outcome.seconds = time.perf_counter() - start
        (scratch / "mutation-seconds").write_text(f"{outcome.seconds:.0f}{' resumed' * resumed}\n")  # --from-kept
        outcome.status = verdicts(meta, module) if meta.is_file() else {}
        if before:
            outcome.status = kept_verdicts(before, json.loads(meta.read_text()), outcome.status)
        if not outcome.status or all(s == "not checked" for s in outcome.status.values()):
            # mutmut stops before the mutants when the unmutated tests fail or cannot be collected
            output = _last_lines(done.stdout + done.stderr) if done is not None else "nothing ran"
            outcome.error = f"mutmut checked no mutant (exit {done.returncode if done else '-'}): {output}"
            outcome.status = {}
            return outcome
        for name, status in outcome.status.items():
            if status not in ("killed", "timeout", "not checked"):
                outcome.diffs[name] = mutated_lines(scratch, name, env)
        if echo:
            print(f"{module.name}: {len(outcome.status)} mutants in {outcome.seconds:.0f} s", flush=True)
        return outcome
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _last_lines(output: str, count: int = 3) -> str:
    """The last ``count`` non-empty lines of ``output`` (spinner frames dropped), joined for one table cell."""
    lines = [line.split("\r")[-1].strip() for line in output.splitlines()]
    return " / ".join([line for line in lines if line][-count:]).replace("|", "/")


def kept_verdicts(before: dict, after: dict, status: dict[str, str]) -> dict[str, str]:
    """``status`` with the earlier run's detections kept where mutmut reset them (a changed test selection resets
    every verdict) and the mutated function's code is unchanged (its hash in mutmut's record ``after``)."""
    hashes = before.get("hash_by_function_name", {}), after.get("hash_by_function_name", {})
    kept = dict(status)
    for name, now in status.items():
        old = status_of(before["exit_code_by_key"].get(name))
        function = name.rsplit(".", 1)[-1].split("__mutmut_")[0]
        if now == "not checked" and old in ("killed", "timeout") and hashes[0].get(function) == hashes[1].get(function):
            kept[name] = old
    return kept


def verdicts(meta: Path, module: Module) -> dict[str, str]:
    """The status of each of ``module``'s mutants in mutmut's record ``meta``."""
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    wanted = [re.compile(fnmatch.translate(g)) for g in module.globs()]
    return {k: status_of(c) for k, c in sorted(codes.items()) if any(w.match(k) for w in wanted)}


HEADER = (
    "| module | file | guards | generated | killed | by hand | survived | timeout | equivalent | other | score "
    "| time (s) |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(o: Outcome) -> str:
    """The table row of one module's outcome."""
    m = o.module
    if o.error:
        return f"| `{m.name}` | `{m.path}` | {m.what} | {o.error} | | | | | | | | {o.seconds:.0f} |"
    equivalent, by_hand = len(o.equivalent()), len(o.by_hand())
    other = len(o.status) - o.count("killed", "survived", "timeout")
    score = o.score()
    shown = "n/a" if score is None else f"{100 * score:.1f}%"
    return (
        f"| `{m.name}` | `{m.path}` | {m.what} | {len(o.status)} | {o.count('killed')} | {by_hand} | "
        f"{o.count('survived') - equivalent - by_hand} | {o.count('timeout')} | {equivalent} | {other} | {shown} | "
        f"{f'{o.seconds:.0f}' if o.seconds else 'stopped'}{' (resumed)' if o.resumed else ''} |"
    )


def _rows(previous: str, marker: str) -> dict[str, str]:
    rows = {}
    for line in previous.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match and marker in line:
            rows[match[1]] = line
    return rows


def _section(text: str, title: str) -> str:
    """The body of ``## title`` in ``text`` (up to the next ``## ``), or empty."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return match[1].strip() + "\n" if match else ""


def page(outcomes: list[Outcome], previous: str = "", known: str = "") -> str:
    """docs/mutants.md: the modules' table (rows of modules not rerun kept from ``previous``), the equivalent
    mutants, the other survivors, the hand-picked mutants' table (``known``, or kept from ``previous``), and the
    hand-written ``## History`` section of ``previous``, kept as it is."""
    names = {m.name for m in MODULES}
    rows = {name: line for name, line in _rows(_section(previous, "Scores"), "|").items() if name in names}
    rows.update({o.module.name: row(o) for o in outcomes})
    table = "\n".join([HEADER, *[rows[m.name] for m in MODULES if m.name in rows]])
    rerun = {o.module.name for o in outcomes}

    def kept(title: str, fresh: list[str]) -> list[str]:
        lines = [line for line in _section(previous, title).splitlines() if line.startswith("- `")]
        lines = [line for line in lines if not any(line.startswith(f"- `{name}`") for name in rerun)]
        return sorted(lines + fresh)

    equivalent = kept(
        "Equivalent mutants",
        [f"- `{o.module.name}` `{n}`: {reason}" for o in outcomes for n, reason in o.equivalent().items()],
    )
    survivors = kept(
        "Survivors",
        [
            f"- `{o.module.name}` `{n}` ({o.status[n]}): `{o.diffs.get(n, '')}`"
            for o in outcomes
            for n in o.status
            if o.status[n] not in ("killed", "timeout", "not checked")
            and n not in o.equivalent()
            and n not in o.by_hand()
        ],
    )
    by_hand = kept(
        "Killed by hand-picked mutants",
        [
            f"- `{o.module.name}` `{n}`: `{o.diffs.get(n, '')}`, planted as `{known}`"
            for o in outcomes
            for n, known in o.by_hand().items()
        ],
    )
    known = known or _section(previous, "Hand-picked mutants")
    return (
        PAGE_INTRO
        + "## Scores\n\n"
        + table
        + "\n\n## Equivalent mutants\n\n"
        + ("\n".join(equivalent) or "None.")
        + "\n\n## Killed by hand-picked mutants\n\n"
        + ("\n".join(by_hand) or "None.")
        + "\n\n## Survivors\n\n"
        + ("\n".join(survivors) or "None.")
        + "\n\n## Hand-picked mutants\n\n"
        + (known.strip() or "Not run yet: `python -m tools.mutation --known`.")
        + "\n"
        + (f"\n## History\n\n{history.strip()}\n" if (history := _section(previous, "History")) else "")
    )


PAGE_INTRO = """# Mutation testing

Written by `python -m tools.mutation --write docs/mutants.md` (mutmut, configured in `setup.cfg`). For each
module, mutmut generates every mutant of the guard functions named in `tools/mutation.py` (operators, constants,
arguments and return values swapped, calls dropped) and runs the module's mirrored tests on each, only those that
reach the mutated function. *Killed*: a test failed; *timeout*: the tests ran far longer than unmutated, counted as
detected; *equivalent*: a survivor that changes nothing observable, listed below with its reason and left out of
the score; *by hand*: a survivor that changes where a warning points, which the tests check only outside mutmut
(its trampolines add call frames), so the same bug is planted as a hand-picked mutant (named below, run by
`--known`), counted as detected; *other*: mutants mutmut did not check (no test reaches them, a crash, or a run
stopped before them: *not checked*), counted as not detected; the survivors section lists the checked ones.
The score is (killed + timeout + by hand) / (generated - equivalent). The time is the wall-clock time of
`mutmut run` for the module (its test-coverage pass included), on a 2-core machine shared with other jobs, one
mutant at a time; *(resumed)*: `--keep DIR --resume` reran only the mutants an earlier full run in DIR had not
detected, with the tests added since (mutmut measures the new tests' coverage; a detection is kept where the
function's code is unchanged: more tests cannot let a killed mutant survive).

"""


def main(argv: list[str] | None = None) -> list[Outcome]:
    """Runs the modules named in ``argv`` (all by default), prints the page and optionally writes it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", default=[], help="a module (name or pattern); repeatable")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument(
        "--known",
        nargs="*",
        metavar="NAME",
        help="also run the hand-picked mutants (all: about 25 minutes), or those named",
    )
    parser.add_argument("--no-modules", action="store_true", help="run no module (with --known: only those)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default: 1)")
    parser.add_argument("--keep", type=Path, help="keep the scratch copies (for `mutmut show`) under this folder")
    parser.add_argument("--resume", action="store_true", help="with --keep: rerun only the mutants not detected")
    parser.add_argument("--from-kept", action="store_true", help="with --keep: only report the verdicts kept there")
    parser.add_argument("--write", type=Path, help="also write the page here (modules not rerun keep their rows)")
    args = parser.parse_args(argv)
    modules = [] if args.no_modules else select(args.module)
    if args.list:
        for m in modules:
            print(f"{m.name}  [{m.path}]  {m.what}\n    functions: {', '.join(m.functions)}")
            print(f"    tests: {' '.join(m.tests)}")
        return []
    if args.resume and args.keep is None:
        parser.error("--resume needs --keep (the folder of the earlier run's copies)")
    if args.from_kept and args.keep is None:
        parser.error("--from-kept needs --keep (the folder of the earlier run's copies)")
    if args.from_kept:
        outcomes = [kept_outcome(m, args.keep) for m in modules]
    else:
        outcomes = [run_module(m, args.max_children, args.keep, echo=True, resume=args.resume) for m in modules]
    previous = args.write.read_text() if args.write and args.write.is_file() else ""
    known = ""
    if args.known is not None:  # the mutants not rerun keep their rows
        results = known_mutants.run(known_mutants.select(args.known), 600.0, True, echo=True)
        known = known_mutants.KNOWN_INTRO + known_mutants.table(results, _section(previous, "Hand-picked mutants"))
    text = page(outcomes, previous, known)
    print(text)
    if args.write:
        args.write.write_text(text)
    return outcomes


if __name__ == "__main__":
    done = main()
    sys.exit(0 if all(not o.error and (o.score() or 0) >= 0.9 for o in done) else 1)
