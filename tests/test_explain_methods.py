"""`captum-gradeclip explain --method NAME`: any method of the registry, in-process on ShapesCLIP.

GAME's map and word scores through the CLI equal GAME computed directly; an image-only method skips the
words with a warning; a method the model cannot run, an unknown or ambiguous name, and --mode with a method
that has no modes are one-line errors with exit code 2.
"""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

import captum_gradeclip as cg
from captum_gradeclip import methods
from captum_gradeclip.cli import CLIError, load_model
from captum_gradeclip.cli.commands import METHOD_HELP
from captum_gradeclip.cli.explain import explain, pick_method
from captum_gradeclip.cli.main import main
from captum_gradeclip.zoo import shapes


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    scene = shapes.make_scene(4_100_000, n_objects=2)
    scene.image.save(root / "scene.png")
    return root / "scene.png", scene


def _run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["explain", *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _printed(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:1] in "* "]


@pytest.mark.parametrize(
    ("given", "name"),
    [
        (None, "Grad-ECLIP (native)"),
        ("game", "GAME"),
        ("GAME", "GAME"),
        ("roll", "Rollout"),
        ("grad-eclip", "Grad-ECLIP (native)"),
        ("Grad-ECLIP (paper)", "Grad-ECLIP (paper)"),
        ("gradeclippaper", "Grad-ECLIP (paper)"),
        ("clip_surgery", "CLIP Surgery"),
    ],
)
def test_method_names_match_the_registry_by_name_or_start(given, name):
    assert pick_method(given) is methods.get(name)


def test_unknown_and_ambiguous_names_are_errors_listing_the_names():
    names = ", ".join(repr(m.name) for m in methods.available())
    with pytest.raises(CLIError) as info:
        pick_method("lime")
    assert str(info.value) == (
        f"captum-gradeclip explain: --method: no method is called 'lime'; the methods are {names}"
    )
    with pytest.raises(CLIError, match=r"'grad' matches 'Grad-ECLIP \(native\)', 'Grad-ECLIP \(paper\)', 'Grad-CAM'"):
        pick_method("grad")
    with pytest.raises(CLIError, match="no method is called '--'"):
        pick_method("--")


@pytest.mark.parametrize(("typed", "meant"), [("gradcam++", "Grad-CAM"), ("rolout", "Rollout"), ("gamee", "GAME")])
def test_a_near_miss_is_an_error_with_a_did_you_mean_never_another_method(typed, meant):
    with pytest.raises(CLIError, match=rf"no method is called '{re.escape(typed)}' \(did you mean '{meant}'\?\);"):
        pick_method(typed)


def test_the_static_help_names_every_registered_method():
    # --help cannot read the registry (it would import torch): tools/generate_method_tables.py writes it from the
    # registry (tests/test_docs_methods.py fails when it is stale); this reads the help as a user does
    for method in methods.available():
        assert method.name.split(" (")[0] in METHOD_HELP, method.name
    said = METHOD_HELP.rpartition(". ")[2]
    assert said.endswith("explain the image only: no word importances then")
    for method in methods.available("image"):
        if ":" not in method.name:  # prefixed families (captum:) are named as a group
            assert (method.name in said) == ("text" not in method.modalities), method.name


def test_game_through_the_cli_equals_game_computed_directly(scene_file):
    path, scene = scene_file
    texts = [*scene.prompts, scene.absent_prompts[0]]
    loaded = load_model("shapes")
    with Image.open(path) as image:
        _, scores, maps, words = explain(loaded, image.convert("RGB"), texts, method=methods.get("GAME"))
        pixels = loaded.pixels(image.convert("RGB"))
    ids, mask = loaded.tokenize(texts)
    sim = cg.ImageTextSimilarity(loaded.model, {"input_ids": ids, "attention_mask": mask})
    expected = cg.baselines.GAME(sim).attribute(pixels)[0]
    assert maps.shape == expected.shape == (len(texts), *expected.shape[-2:])
    assert torch.equal(maps, expected.float())
    assert torch.allclose(scores, sim(pixels).detach()[0])
    tsim = cg.TextImageSimilarity(loaded.model, images=pixels)
    rows = cg.baselines.GAME(tsim).attribute(ids, target=[0] * len(texts), additional_forward_args=(mask,))
    for j, text in enumerate(texts):
        keep = mask[j].bool()
        assert words[j] == cg.words(loaded.tokens(ids[j][keep]), rows[j][keep], text=text)
    # and it is not Grad-ECLIP's map
    assert not torch.allclose(maps, explain(loaded, Image.open(path).convert("RGB"), texts)[2])


@pytest.mark.parametrize("given", ["game", "rollout"])
def test_explain_with_a_text_method_prints_scores_and_words_and_writes_the_report(capsys, scene_file, tmp_path, given):
    path, scene = scene_file
    texts = [scene.prompts[0], scene.absent_prompts[0]]
    code, out, err = _run(capsys, str(path), *texts, "--method", given, "--out", str(tmp_path / "out"))
    assert code == 0, err
    lines = _printed(out)
    assert len(lines) == 2 and all(repr(t) in line for t, line in zip(texts, lines, strict=True))
    assert f"{scene.objects[0].colour}=" in lines[0] and "(not explained)" not in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["explanation.png", "index.html"]
    name = pick_method(given).name
    page = (tmp_path / "out" / "index.html").read_text()
    assert f"explained by {name} on shapes</title>" in page and f"Method: <b>{name}</b>. Model: <b>shapes</b>" in page
    assert f"explained by {name} on shapes; wrote" in out, "the console names the method and the model that ran"
    assert "warning" not in err


def test_an_image_only_method_skips_the_words_with_a_warning(capsys, scene_file, tmp_path):
    path, scene = scene_file
    code, out, err = _run(capsys, str(path), scene.prompts[0], "--method", "maskclip", "--out", str(tmp_path))
    assert code == 0, err
    assert err.strip() == "captum-gradeclip: warning: no word importances: MaskCLIP explains image only"
    lines = _printed(out)
    assert len(lines) == 1 and lines[0].endswith("words: (not explained)")
    page = (tmp_path / "index.html").read_text()
    assert "no word importances: MaskCLIP explains image only" in page
    with Image.open(tmp_path / "explanation.png") as figure:
        assert figure.format == "PNG"


def test_errors_are_one_line_with_exit_code_2(capsys, scene_file, tmp_path):
    path, _ = scene_file
    code, out, err = _run(capsys, str(path), "a red circle", "--method", "lime", "--out", str(tmp_path / "a"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("captum-gradeclip: error: captum-gradeclip explain: --method: no method is called 'lime'")
    assert all(repr(m.name) in err for m in methods.available())
    code, out, err = _run(capsys, str(path), "a red circle", "--method", "game", "--mode", "paper")
    assert code == 2 and err == (
        "captum-gradeclip: error: captum-gradeclip explain: --mode paper is Grad-ECLIP's; GAME has no modes\n"
    )
    assert not (tmp_path / "a").exists(), "nothing is written on an error"


def test_a_method_needing_self_attention_on_an_attention_pool_is_a_one_line_error(capsys, scene_file):
    pytest.importorskip("open_clip")
    path, _ = scene_file
    code, out, err = _run(capsys, str(path), "a red circle", "--model", "shapes:resnet", "--method", "rollout")
    assert code == 2 and out == "" and err.count("\n") == 1
    usable = ", ".join(m.name for m in methods.available("image", attention_pool=True))
    assert err == (
        "captum-gradeclip: error: cannot explain with shapes:resnet: Rollout needs token-to-token attention in the "
        "image tower's last block, and this model's ends in an attention pool (one pooled query); the methods for "
        f"this model's images are {usable}\n"
    )
    assert "GAME" not in usable and "Grad-CAM" in usable
