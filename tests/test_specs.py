"""The model specs are written once (``captum_gradeclip/specs.py``): the library's errors and the command line's
``--model`` help list the same forms, and the help reads them without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from captum_gradeclip import loading, specs, zoo
from captum_gradeclip.adapters import ADAPTERS
from captum_gradeclip.adapters.processing import ProcessingRole
from captum_gradeclip.cli import commands

ROOT = Path(__file__).resolve().parents[1]


def test_the_library_and_the_command_line_share_one_spec_list():
    assert loading.SPECS is specs.SPECS
    assert commands.MODEL_SPECS is specs.SPECS
    assert specs.SPECS in commands.MODEL_HELP


def test_the_spec_list_names_every_shapes_spec_and_every_loader_prefix():
    forms = [form.strip() for form in specs.SPECS.split("|")]
    assert set(zoo.MODEL_SPECS) <= set(forms)
    named = {form.partition(":")[0] for form in forms}
    loaders = {a.spec_prefixes[0] for a in ADAPTERS if issubclass(a, ProcessingRole)}
    assert loaders and loaders <= named, f"loaders missing from specs.SPECS: {sorted(loaders - named)}"


def test_the_spec_list_imports_nothing_heavy():
    code = "import sys, captum_gradeclip.specs; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
