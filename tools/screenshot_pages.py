"""Screenshots of the built docs and of HTML reports in headless Chromium, and the checks a machine can make on them.

    python -m tools.screenshot_pages OUT --build-docs --demo            # build the docs and a demo report first
    python -m tools.screenshot_pages OUT --docs docs/_build/html --page gallery.html
    python -m tools.screenshot_pages OUT --report gradeclip_explain/index.html --height 1400 --colours 256

For each page it writes ``OUT/<page>.png``, a screenshot at ``--width`` CSS pixels (the page's whole height, up to
``--height``), and checks, in the browser:

- the page loaded (an injected script ran after the ``load`` event);
- every ``<img>`` loaded: a non-zero ``naturalWidth`` (no broken image);
- no horizontal scrollbar: the page is no wider than the window.

It prints one table row per page, with the smallest scale at which an image is shown (its width on the page over
its own width: a figure shown at 0.5 has its text at half its size), and exits 1 when a check fails. Chromium
(Debian's ``chromium``, or ``--chromium PATH``) runs headless with its background networking off; the pages are
read from disk, as the docs build and the reports are self-contained.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

#: Flags of every headless run: no GPU, no sandbox (containers), nothing fetched in the background.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--force-device-scale-factor=1", "--hide-scrollbars",
]  # fmt: skip
#: The docs pages screenshot by default (and every tutorial's), relative to the built HTML.
DOCS_PAGES = ("index.html", "getting_started.html", "gallery.html", "tutorials.html", "tutorial_notebooks/*.html")
#: Milliseconds of virtual time a page gets to load its images and run its scripts.
BUDGET_MS = 10_000
#: CSS pixels: the least height of a screenshot (and of the window that measures a page's height).
MIN_HEIGHT = 200
#: The id of the element where the injected script writes its findings.
MARKER = "screenshot-pages-check"

# Runs after the page's load event, once every image is done (lazy ones are made eager first); writes what it
# found as JSON into a hidden element, which --dump-dom prints. The page's size is read before that element exists.
_SCRIPT = """<script>
(function () {
  var images = Array.prototype.slice.call(document.images);
  images.forEach(function (i) { i.loading = "eager"; });
  function report() {
    var root = document.documentElement;
    var found = {
      title: document.title,
      clientWidth: root.clientWidth,
      scrollWidth: Math.max(root.scrollWidth, document.body ? document.body.scrollWidth : 0),
      height: Math.max(root.scrollHeight, document.body ? document.body.scrollHeight : 0),
      images: Array.prototype.slice.call(document.images).map(function (i) {
        return {src: (i.currentSrc || i.src).slice(0, 200), alt: i.alt, natural: i.naturalWidth,
                shown: i.getBoundingClientRect().width};
      })
    };
    var out = document.createElement("pre");
    out.id = "MARKER";
    out.style.display = "none";
    out.textContent = JSON.stringify(found);
    document.body.appendChild(out);
  }
  function wait(tries) {
    var pending = Array.prototype.slice.call(document.images).filter(function (i) { return !i.complete; });
    if (pending.length && tries > 0) { setTimeout(function () { wait(tries - 1); }, 50); } else { report(); }
  }
  window.addEventListener("load", function () { wait(100); });
})();
</script>""".replace("MARKER", MARKER)


@dataclass
class PageCheck:
    """What the browser found on one page.

    Attributes:
        page (Path): the HTML file.
        loaded (bool): the injected script ran after the ``load`` event.
        title (str): the page's ``<title>``.
        images (int): how many ``<img>`` it has.
        broken (list[str]): the images that did not load (their ``alt`` or the start of their ``src``).
        page_width (int): the page's width in CSS pixels (its ``scrollWidth``).
        window_width (int): the window's width, without a scrollbar (``clientWidth``).
        height (int): the page's height in CSS pixels.
        scales (list[float]): per image that loaded, its width on the page over its own width.
        screenshot (Path, optional): the PNG written, if any.
    """

    page: Path
    loaded: bool = False
    title: str = ""
    images: int = 0
    broken: list[str] = field(default_factory=list)
    page_width: int = 0
    window_width: int = 0
    height: int = 0
    scales: list[float] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def overflows(self) -> bool:
        """The page is wider than the window: a horizontal scrollbar."""
        return self.page_width > self.window_width

    @property
    def problems(self) -> list[str]:
        """The failed checks, one line each; empty when the page is fine."""
        if not self.loaded:
            return ["the page did not load (the check script never ran)"]
        out = [f"broken image: {name}" for name in self.broken]
        if self.overflows:
            out.append(f"horizontal scrollbar: page {self.page_width} px wide, window {self.window_width} px")
        return out


def find_chromium(path: str | None = None) -> str | None:
    """The Chromium to run: ``path`` if given, else ``chromium`` or ``chromium-browser`` on the PATH; None if none."""
    if path is not None:
        return path if shutil.which(path) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(browser: str, profile: Path, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _with_check_script(page: Path) -> str:
    """The page's HTML with a ``<base>`` at its own folder (so that it reads its files from there when saved
    elsewhere) and the check script at its end."""
    text = page.read_text(encoding="utf-8", errors="replace")
    base = f'<base href="{html.escape(page.parent.resolve().as_uri())}/">'
    head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    text = text[: head.end()] + base + text[head.end() :] if head else base + text
    end = text.lower().rfind("</body>")
    return text[:end] + _SCRIPT + text[end:] if end >= 0 else text + _SCRIPT


def check_page(browser: str, page: Path, width: int = 1280, timeout: float = 120) -> PageCheck:
    """Loads ``page`` in headless Chromium, ``width`` CSS pixels wide, and reads what :data:`_SCRIPT` found.

    Args:
        browser (str): the Chromium executable (:func:`find_chromium`).
        page (Path): an HTML file; the original is not changed (a copy with the script is loaded).
        width (int, optional): the window's width in CSS pixels. Default: 1280.
        timeout (float, optional): seconds before Chromium is stopped. Default: 120.

    Returns:
        *PageCheck*.
    """
    page = Path(page)
    if not page.is_file():
        raise FileNotFoundError(f"`page`: no such HTML file: {page}")
    with tempfile.TemporaryDirectory(prefix="screenshot_pages_") as scratch:
        copy = Path(scratch) / "page.html"
        copy.write_text(_with_check_script(page), encoding="utf-8")
        window = f"--window-size={width},{MIN_HEIGHT}"  # low: the page's height is its content's, not the window's
        done = _run(browser, Path(scratch) / "profile", [window, "--dump-dom", copy.as_uri()], timeout)
    found = re.search(rf'<pre id="{MARKER}"[^>]*>(.*?)</pre>', done.stdout, flags=re.DOTALL)
    if done.returncode != 0 or found is None:
        return PageCheck(page)
    data = json.loads(html.unescape(found[1]))
    images = data["images"]
    return PageCheck(
        page,
        loaded=True,
        title=data["title"],
        images=len(images),
        broken=[i["alt"] or i["src"][:80] for i in images if not i["natural"]],
        page_width=int(data["scrollWidth"]),
        window_width=int(data["clientWidth"]),
        height=int(data["height"]),
        scales=[i["shown"] / i["natural"] for i in images if i["natural"]],
    )


def screenshot(browser: str, page: Path, out: Path, width: int = 1280, height: int = 900, timeout: float = 120) -> Path:
    """Writes a PNG of ``page`` as a ``width`` x ``height`` window shows it (from its top).

    Returns:
        *Path*: ``out``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshot_pages_") as scratch:
        done = _run(browser, Path(scratch) / "profile",
                    [f"--window-size={width},{height}", f"--screenshot={out.resolve()}", Path(page).resolve().as_uri()],
                    timeout)  # fmt: skip
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium could not screenshot {page}: {done.stderr.strip()[-500:]}")
    return out


def docs_pages(docs: Path, patterns: Sequence[str] = DOCS_PAGES) -> list[Path]:
    """The built pages of ``docs`` that match ``patterns`` (globs relative to it), in order, each once."""
    pages: list[Path] = []
    for pattern in patterns:
        matched = sorted(docs.glob(pattern))
        if not matched:
            raise FileNotFoundError(f"no page of {docs} matches {pattern!r}")
        pages += [p for p in matched if p not in pages]
    return pages


def build_docs(out: Path) -> Path:
    """``sphinx-build -W -b html docs OUT``, as CI builds them; returns ``out``."""
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(ROOT / "docs"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the docs build failed:\n{done.stderr[-3000:]}")
    return out


def demo_report(out: Path, model: str = "shapes") -> Path:
    """``captum-gradeclip demo --model MODEL --out OUT``; returns its ``index.html``."""
    command = [sys.executable, "-m", "captum_gradeclip", "demo", "--model", model, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the demo failed:\n{done.stderr[-3000:]}")
    return out / "index.html"


def small_png(path: Path, colours: int = 256) -> Path:
    """Rewrites the PNG at ``path`` with a palette of ``colours`` (PIL's quantizer, dithered) and optimised, to
    commit it small; returns ``path``."""
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colours)
    small.save(path, optimize=True)
    return path


def shoot(
    browser: str,
    pages: Sequence[tuple[str, Path]],
    out: Path,
    width: int = 1280,
    max_height: int = 6000,
    colours: int | None = None,
) -> list[PageCheck]:
    """Checks each ``(name, page)`` and writes ``OUT/<name>.png``, the page's whole height up to ``max_height``
    (with ``colours``, a palette PNG of that many colours: :func:`small_png`)."""
    checks = []
    for name, page in pages:
        check = check_page(browser, page, width)
        if check.loaded:
            height = min(max(check.height, MIN_HEIGHT), max_height)
            check.screenshot = screenshot(browser, page, out / f"{name}.png", width, height)
            if colours is not None:
                small_png(check.screenshot, colours)
        checks.append(check)
    return checks


def table(checks: Sequence[PageCheck], names: Sequence[str]) -> str:
    """A Markdown table: one row per page."""
    lines = [
        "| page | loaded | images | broken | page width (px) | horizontal scrollbar | smallest image scale |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in zip(names, checks, strict=True):
        scale = f"{min(c.scales):.2f}" if c.scales else "-"
        lines.append(
            f"| {name} | {'yes' if c.loaded else 'NO'} | {c.images} | {len(c.broken) or '-'} | "
            f"{c.page_width} of {c.window_width} | {'YES' if c.overflows else 'no'} | {scale} |"
        )
    return "\n".join(lines)


def _name(page: Path, base: Path | None) -> str:
    relative = page.relative_to(base) if base is not None and page.is_relative_to(base) else Path(page.name)
    return "-".join(relative.with_suffix("").parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshot_pages", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the screenshots (and a docs build or demo, if asked)")
    parser.add_argument("--docs", type=Path, help="a built docs folder (sphinx-build -b html's output)")
    parser.add_argument("--build-docs", action="store_true", help="build the docs into OUT/html first")
    parser.add_argument("--page", action="append", help=f"docs pages (globs); default: {', '.join(DOCS_PAGES)}")
    parser.add_argument("--report", type=Path, action="append", default=[], help="an HTML report to check too")
    parser.add_argument("--demo", action="store_true", help="run `captum-gradeclip demo` into OUT/demo, check it")
    parser.add_argument("--demo-model", default="shapes", help="the demo's --model (default: shapes)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default: 1280)")
    parser.add_argument("--height", type=int, default=6000, help="the screenshots' most height (default: 6000)")
    parser.add_argument("--colours", type=int, help="save palette PNGs of this many colours (2-256), to commit")
    parser.add_argument("--chromium", help="the Chromium executable (default: chromium on the PATH)")
    args = parser.parse_args(argv)
    if args.colours is not None and not 2 <= args.colours <= 256:
        parser.error(f"--colours must be 2 to 256; got {args.colours}")
    if args.docs is not None and args.build_docs:
        parser.error("give --docs (a built folder) or --build-docs, not both")
    if args.docs is not None and not (args.docs / "index.html").is_file():
        parser.error(f"--docs: {args.docs} has no index.html (is it sphinx-build -b html's output?)")
    if args.page and args.docs is None and not args.build_docs:
        parser.error("--page needs --docs or --build-docs")
    for report in args.report:
        if not report.is_file():
            parser.error(f"--report: no such HTML file: {report}")
    if args.docs is None and not (args.build_docs or args.report or args.demo):
        parser.error("nothing to screenshot: give --docs, --build-docs, --report or --demo")
    browser = find_chromium(args.chromium)
    if browser is None:
        parser.error("no Chromium: install Debian's `chromium` (apt-get install -y chromium) or pass --chromium PATH")
    docs = build_docs(args.out / "html") if args.build_docs else args.docs
    pages = [(_name(p, docs), p) for p in docs_pages(docs, args.page or DOCS_PAGES)] if docs is not None else []
    reports = list(args.report) + ([demo_report(args.out / "demo", args.demo_model)] if args.demo else [])
    pages += [(f"report-{_name(r, r.parent.parent)}", r) for r in reports]
    checks = shoot(browser, pages, args.out, args.width, args.height, args.colours)
    print(table(checks, [n for n, _ in pages]))
    failed = [(n, c) for (n, _), c in zip(pages, checks, strict=True) if c.problems]
    for name, check in failed:
        for problem in check.problems:
            print(f"{name}: {problem}", file=sys.stderr)
    print(f"screenshots in {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
