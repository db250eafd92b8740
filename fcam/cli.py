"""The ``fcam`` command line: ``fcam --version`` (more sub-commands arrive with the demo)."""

from __future__ import annotations

import argparse
import sys

from fcam import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcam",
        description="F-CAM: full-resolution class activation maps for PyTorch classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"fcam {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0
