"""Reading the pairs file of a dataset run: ``image,text`` or ``image,label`` rows from a CSV or JSONL file."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from captum_gradeclip.images import printable


class InputError(ValueError):
    """An input of a dataset run that cannot be used (the pairs file, a folder, an option): the message says why."""


@dataclass(frozen=True)
class Item:
    """One row of the pairs file: ``index`` from 0, the image path as given, the text or the label."""

    index: int
    image: str
    text: str | None = None
    label: str | None = None


def read_pairs(path: str | Path, column: str | None = None) -> list[Item]:
    """Reads ``image,text`` or ``image,label`` rows from a CSV (with a header) or JSONL file.

    A CSV is parsed by the :mod:`csv` module on the file stream, so a quoted field keeps its newlines, and U+2028,
    ``\\x85`` or ``\\x0c`` inside a field stay in it (they never split a row). A UTF-8 byte-order mark is accepted.

    Args:
        path (str or Path): the pairs file; ``.jsonl``/``.json`` is read as JSON lines, anything else as CSV.
        column (str, optional): ``"text"`` or ``"label"``: which column the rows explain. Needed only when the
            file has both; otherwise the one it has.

    Returns:
        *list[Item]* in file order; ``Item.index`` is the row number from 0.

    Raises:
        FileNotFoundError: if the file does not exist.
        InputError: for a file without rows, a missing or duplicated column, both a ``text`` and a ``label`` column
            and no ``column``, a line that is not JSON or a value that is not a string, naming the file and line.

    Examples::

        >>> from captum_gradeclip.runs import read_pairs
        >>> _ = (tmp_path / "p.csv").write_text('image,text\\na.png,"a red\\nsquare"\\n')
        >>> read_pairs(tmp_path / "p.csv")
        [Item(index=0, image='a.png', text='a red\\nsquare', label=None)]
    """
    path = Path(path)
    name = printable(path)
    if column not in (None, "text", "label"):
        raise InputError(f"`column` must be 'text' or 'label'; got {printable(repr(column))}")
    if not path.is_file():
        raise FileNotFoundError(f"`pairs` file not found: {name}")
    try:
        if path.suffix in (".jsonl", ".json"):
            header, rows = _jsonl(path, name)
        else:
            header, rows = _csv(path, name)
    except UnicodeDecodeError as error:
        raise InputError(f"`pairs` file {name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    columns = set(header)
    if not columns:
        raise InputError(f"`pairs` file {name} is empty")
    if "image" not in columns or not ({"text", "label"} & columns):
        found = ", ".join(sorted(map(repr, columns)))
        raise InputError(f"`pairs` file {name} must have an 'image' column and a 'text' or 'label' column; got {found}")
    if {"text", "label"} <= columns and column is None:
        raise InputError(
            f"`pairs` file {name} has both a 'text' and a 'label' column: choose which the rows explain with "
            "--column text (each image against its text) or --column label (zero-shot over the labels, with "
            "--templates)"
        )
    field = column or ("text" if "text" in columns else "label")
    if field not in columns:
        raise InputError(f"`pairs` file {name} has no {field!r} column (--column {field})")
    if not rows:
        raise InputError(f"`pairs` file {name} has a header but no rows")
    items = []
    for index, (number, row) in enumerate(rows):
        for key in ("image", field):
            if not isinstance(row.get(key), str):
                got = "nothing" if row.get(key) is None else type(row.get(key)).__name__
                raise InputError(f"{name}:{number}: `{key}` must be a string; got {got}")
        text, label = (row[field], None) if field == "text" else (None, row[field])
        items.append(Item(index, row["image"], text, label))
    return items


def _csv(path: Path, name: str) -> tuple[list[str], list[tuple[int, dict]]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        twice = sorted(c for c, n in Counter(header).items() if n > 1)
        if twice:
            raise InputError(f"`pairs` file {name} names column(s) {', '.join(map(repr, twice))} more than once")
        rows = []
        for values in reader:
            if not values:  # a blank line
                continue
            rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    return header, rows


def _jsonl(path: Path, name: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows: list[tuple[int, dict]] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for number, line in enumerate(f, start=1):  # lines end at \n only (newline=""): U+2028 stays in a string
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{name}:{number}: not a JSON object ({error.msg})") from None
            except RecursionError:
                raise InputError(f"{name}:{number}: nested too deep") from None
            if not isinstance(row, dict):
                raise InputError(f"{name}:{number}: each line must be a JSON object; got {type(row).__name__}")
            rows.append((number, row))
    return (list(rows[0][1]) if rows else []), rows
