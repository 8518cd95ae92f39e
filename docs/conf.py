"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

project = "captum-gradeclip"
author = "captum-gradeclip developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
myst_enable_extensions = ["dollarmath"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
suppress_warnings = ["myst.header"]
myst_heading_anchors = 2  # GitHub-style #anchors to ## headings, as the README uses
