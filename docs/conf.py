"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``.

Everything is built offline: MathJax is served from the build (``sphinx-mathjax-offline``), the tutorial
notebooks are executed while building (``myst-nb``) so that their pages show their outputs, and the pictures of
the getting-started page and the gallery are drawn by ShapesCLIP at build time into ``_generated/``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's package, also when another copy is installed
sys.path.insert(0, str(DOCS))

project = "captum-gradeclip"
author = "captum-gradeclip developers"
copyright = "2026, captum-gradeclip developers"  # the footer reads "© 2026, captum-gradeclip developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 from the package, copied into the build: no CDN
    "myst_nb",  # Markdown (MyST) pages and the tutorial notebooks, executed
]
myst_enable_extensions = ["dollarmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# images/review/README.md describes the committed screenshots for the repository, not a page of the docs
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "images/review/README.md"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "furo"  # a wide, responsive page: code lines are not cut as in a narrow column
html_title = "captum-gradeclip"
suppress_warnings = ["myst.header"]
myst_heading_anchors = 2  # GitHub-style #anchors to ## headings, as the README uses

# The tutorials, executed at build time (in a fresh kernel each, offline on ShapesCLIP); a cell that raises fails
# the build.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "remove"  # progress bars and library warnings: noise on a page

NOTEBOOKS = DOCS / "tutorial_notebooks"  # copies of ../tutorials/*.ipynb, made at every build (not committed)
shutil.rmtree(NOTEBOOKS, ignore_errors=True)
NOTEBOOKS.mkdir()
for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
    # a link from tutorials/ to a docs page (../docs/X.md) points from tutorial_notebooks/ to ../X.md
    text = notebook.read_text(encoding="utf-8").replace("](../docs/", "](../")
    (NOTEBOOKS / notebook.name).write_text(text, encoding="utf-8")


def setup(app: object) -> None:
    import generate_pictures

    app.connect("builder-inited", lambda app: generate_pictures.main(DOCS / "_generated"))  # type: ignore[attr-defined]
