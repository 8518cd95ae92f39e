"""The type checker's terms: at most 20 ``# type: ignore`` in the package, each naming its error code and saying
why, and a mypy configuration that checks the whole package (CI runs ``mypy`` before the tests)."""

from __future__ import annotations

import configparser
import io
import re
import tokenize
from pathlib import Path

import captum_gradeclip

PACKAGE = Path(captum_gradeclip.__file__).parent
ROOT = PACKAGE.parent
MAX_IGNORES = 20

#: ``# type: ignore[code, code]  # reason``: the codes, then a comment of its own that says why.
GOOD_IGNORE = re.compile(r"#\s*type:\s*ignore\[[a-z][a-z-]*(?:,\s*[a-z][a-z-]*)*\]\s+#\s*(?P<reason>.*\S)")
ANY_IGNORE = re.compile(r"#\s*type:\s*ignore")
#: Inline mypy switches (``# mypy: ignore-errors``, ``# mypy: disable-error-code=...``) silence more than a line.
INLINE_CONFIG = re.compile(r"#\s*mypy:")


def comments(source: str) -> list[tuple[int, str]]:
    """The ``(line, text)`` of every comment in ``source`` (not ``#`` inside strings)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [(t.start[0], t.string) for t in tokens if t.type == tokenize.COMMENT]


def ignores(source: str) -> list[tuple[int, str]]:
    """The comments of ``source`` that hold a ``type: ignore``, from the first ``#`` of the line's comment."""
    return [(line, text) for line, text in comments(source) if ANY_IGNORE.search(text)]


def bad_ignores(source: str) -> list[tuple[int, str]]:
    """The ``type: ignore`` comments without an error code or without a reason of at least two words."""
    bad = []
    for line, text in ignores(source):
        match = GOOD_IGNORE.search(text)
        if match is None or len(match["reason"].split()) < 2:
            bad.append((line, text))
    return bad


def package_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_rules_tell_good_ignores_from_bad_ones():
    good = "x = f()  # type: ignore[arg-type]  # masks is None here, so boxes is not\n"
    assert ignores(good) and not bad_ignores(good)
    assert not bad_ignores("x = f()  # type: ignore[misc, arg-type]  # numpy's stubs, two arrays\n")
    for bad in (
        "x = f()  # type: ignore\n",  # no code, no reason
        "x = f()  # type: ignore  # a reason without a code\n",
        "x = f()  # type: ignore[arg-type]\n",  # a code without a reason
        "x = f()  # type: ignore[arg-type]  # why\n",  # one word is no reason
        "x = f()  # type:ignore[]  # an empty code list\n",
    ):
        assert bad_ignores(bad) == [(1, bad[bad.index("#") :].rstrip("\n"))], bad
    assert not ignores('text = "# type: ignore"  # a string is no comment\n')


def test_at_most_20_ignores_in_the_package_each_with_its_code_and_a_reason():
    found = {(path, line): text for path, source in package_sources().items() for line, text in ignores(source)}
    assert len(found) <= MAX_IGNORES, f"{len(found)} `# type: ignore` in the package (at most {MAX_IGNORES}):\n" + (
        "\n".join(f"{path}:{line}" for path, line in found)
    )
    bad = [f"{path}:{line}: {text}" for path, source in package_sources().items() for line, text in bad_ignores(source)]
    assert not bad, "each `# type: ignore[code]  # reason` names its error code and says why:\n" + "\n".join(bad)


def test_no_inline_mypy_switches_in_the_package():
    found = [
        f"{path}:{line}: {text}"
        for path, source in package_sources().items()
        for line, text in comments(source)
        if INLINE_CONFIG.search(text)
    ]
    assert not found, "inline `# mypy:` comments silence whole files:\n" + "\n".join(found)


def test_mypy_configuration_checks_the_whole_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mypy = config["mypy"]
    assert mypy["files"].split() == ["captum_gradeclip"]
    for switch in ("check_untyped_defs", "warn_unused_ignores", "show_error_codes"):
        assert mypy.getboolean(switch), switch
    for loose in ("ignore_missing_imports", "ignore_errors", "follow_imports"):
        assert loose not in mypy, f"`{loose}` in [mypy] applies to every module; set it per third-party module"
    for section in config.sections():
        if section.startswith("mypy-"):
            modules = section.removeprefix("mypy-").split(",")
            assert not any(m.strip().startswith("captum_gradeclip") for m in modules), section
            assert set(config[section]) - set(config.defaults()) == {"ignore_missing_imports"}, section
    requirements = config["options.extras_require"]["test"].split("\n")
    test_extra = [re.split(r"[\s<>=!~;\[]", line.strip())[0] for line in requirements]
    assert "mypy" in test_extra, "CI installs the `test` extra and runs mypy"
