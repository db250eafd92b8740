"""Sphinx configuration for the fcam documentation.

Build with ``sphinx-build -W -b html docs docs/_build`` (the docs extra installs the tools:
``pip install "fcam[docs]"``).
"""

from __future__ import annotations

import importlib.util
import os
import sys

# Build against the checkout even when fcam is not installed (e.g. on Read the Docs).
sys.path.insert(0, os.path.abspath(".."))

import fcam

project = "fcam"
author = "fcam contributors"
copyright = "2026, fcam contributors"
version = fcam.__version__
release = fcam.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_parser",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_scripts", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# autodoc / napoleon: Google-style docstrings, signatures typed from annotations.
autodoc_default_options = {"member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Offline builds: intersphinx inventories are optional, so no mapping is configured by default.
# Set FCAM_DOCS_INTERSPHINX=1 to link torch / numpy / Python objects when online.
intersphinx_mapping: dict[str, tuple[str, None]] = {}
if os.environ.get("FCAM_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "numpy": ("https://numpy.org/doc/stable", None),
    }

# MathJax comes from a CDN; with the optional sphinx-mathjax-offline package installed the
# pages carry their own copy and render formulas without network access.
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")

copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

html_theme = "furo"
html_title = f"fcam {release}"
html_static_path = ["_static"]
pygments_style = "sphinx"
