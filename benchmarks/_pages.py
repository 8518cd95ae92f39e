"""What the benchmarks share to write their docs pages.

A page may hold the results of several runs (the speed page: one per model, device and dtype; the quality page: one
per model). Each run owns one section, between ``<!-- TOOL: KEY -->`` and ``<!-- /TOOL: KEY -->``; a rerun replaces
its own section and keeps the others in their order. The command a page shows leaves out the options that are no
part of the result (where a run keeps its progress or its raw numbers).
"""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, tool: str, intro: str, key: str, body: str) -> None:
    """Writes ``body`` as the section ``key`` of the page at ``path`` under ``intro``, keeping the other sections."""
    marker = re.escape(tool)
    pattern = re.compile(rf"<!-- {marker}: (.+?) -->\n(.*?)<!-- /{marker}: \1 -->\n", re.DOTALL)
    sections = {m.group(1): m.group(2) for m in pattern.finditer(path.read_text())} if path.is_file() else {}
    sections[key] = body.strip("\n") + "\n"
    page = intro.rstrip("\n") + "\n"
    page += "".join(f"\n<!-- {tool}: {k} -->\n{b}<!-- /{tool}: {k} -->\n" for k, b in sections.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)


def without_options(argv: list[str], *hidden: str) -> list[str]:
    """``argv`` without the options ``hidden`` and their values (``--x v`` or ``--x=v``)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in hidden:
            skip = True
        elif arg.split("=", 1)[0] not in hidden:
            shown.append(arg)
    return shown
