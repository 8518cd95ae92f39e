"""``python -m captum_gradeclip <command>`` (also installed as ``captum-gradeclip``).

``--help``, ``--version`` and ``COMMAND --help`` answer from :mod:`captum_gradeclip.commands` alone, without
importing torch; a command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import sys

from captum_gradeclip import __version__
from captum_gradeclip.commands import COMMANDS, PARSERS, PROG, CLIError, main_parser

#: The module whose ``main(argv)`` runs each command.
MODULES = {
    "demo": "captum_gradeclip.demo",
    "explain": "captum_gradeclip.explain",
    "explain-dataset": "captum_gradeclip.dataset",
}


def main(argv: list[str] | None = None) -> None:
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
    except CLIError as error:  # one line, exit code 2, no traceback; control characters written out
        from captum_gradeclip.images import printable

        print(f"{PROG}: error: {printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
