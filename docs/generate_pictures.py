"""Draws the pictures of the docs with ShapesCLIP, offline: ``python docs/generate_pictures.py [OUT]``.

Sphinx runs it at every build (``conf.py``), into ``docs/_generated/``:

- ``first_picture.png``: what ``captum-gradeclip explain scene.png "a yellow square" "a green triangle" "a red
  square" --score softmax`` draws, for the getting-started page;
- ``demo/scene_K.png``: the figures of ``captum-gradeclip demo``, for the gallery;
- ``unknown_words.png``: ``explain`` with texts outside ShapesCLIP's world, for the gallery.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

#: The scene and texts of the getting-started page's first picture.
FIRST_SCENE = 7
FIRST_TEXTS = ["a yellow square", "a green triangle", "a red square"]
UNKNOWN_TEXTS = ["a woman", "a uniform", "a red flag"]


def main(out: Path) -> None:
    from captum_gradeclip.cli import demo, explain
    from captum_gradeclip.zoo import shapes

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scene = shapes.make_scene(FIRST_SCENE)
    scene.image.save(out / "scene.png")
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explain.main([str(out / "scene.png"), *FIRST_TEXTS, "--score", "softmax", "--out", str(out / "first")])
        explain.main([str(out / "scene.png"), *UNKNOWN_TEXTS, "--out", str(out / "unknown")])
        demo.main(["--out", str(out / "demo")])
    (out / "first" / "explanation.png").replace(out / "first_picture.png")
    (out / "unknown" / "explanation.png").replace(out / "unknown_words.png")
    (out / "demo_output.txt").write_text(quiet.getvalue())
    print(f"generate_pictures: drew the docs' pictures in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "_generated")
