"""``python -m captum_gradeclip <command>`` (also installed as ``captum-gradeclip``)."""

from __future__ import annotations

import sys

COMMANDS = {
    "demo": "captum_gradeclip.demo",
    "explain": "captum_gradeclip.explain",
    "explain-dataset": "captum_gradeclip.dataset",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: captum-gradeclip {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        raise SystemExit(2)
    import importlib

    from captum_gradeclip.cli import CLIError

    try:
        importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    except CLIError as error:  # one line, exit code 2, no traceback; control characters written out
        from captum_gradeclip.images import printable

        print(f"captum-gradeclip: error: {printable(error)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
