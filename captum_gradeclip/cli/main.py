"""The entry point: ``python -m captum_gradeclip <command>`` and the ``captum-gradeclip`` script.

``--help``, ``--version`` and ``COMMAND --help`` answer from :mod:`captum_gradeclip.cli.commands` alone, without
importing torch; a command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import sys

from captum_gradeclip import __version__
from captum_gradeclip.cli.commands import COMMANDS, PARSERS, CLIError, fail, main_parser

#: The module whose ``main(argv)`` runs each command.
MODULES = {
    "demo": "captum_gradeclip.cli.demo",
    "explain": "captum_gradeclip.cli.explain",
    "explain-dataset": "captum_gradeclip.cli.dataset",
}


def main(argv: list[str] | None = None) -> None:
    """Runs the command in ``argv`` (default: ``sys.argv[1:]``); a :class:`CLIError` is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:
            main_parser(__version__).print_help(sys.stderr)
            raise SystemExit(2)
        command, rest = argv[0], argv[1:]
        if command not in COMMANDS:
            if command.startswith("-"):
                main_parser(__version__).parse_args(argv)  # --help, --version: print and exit 0
            raise CLIError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)} (see --help)")
        if "-h" in rest or "--help" in rest:
            PARSERS[command]().parse_args(rest)  # prints the command's help and exits 0, before any heavy import
        importlib.import_module(MODULES[command]).main(rest)
    except CLIError as error:
        fail(error)
