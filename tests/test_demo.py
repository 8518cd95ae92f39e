"""The README's first command: the demo writes a real map file."""

from __future__ import annotations

from PIL import Image

from captum_gradeclip.__main__ import main


def test_demo_writes_a_png_with_a_nonzero_map(tmp_path, capsys):
    out = tmp_path / "demo.png"
    main(["demo", "--out", str(out), "--text", "a woman in uniform"])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100
    printed = capsys.readouterr().out
    assert "wrote" in printed and "uniform=" in printed
    assert "max 0 " not in printed


def test_unknown_command_exits_with_usage(capsys):
    import pytest

    with pytest.raises(SystemExit) as info:
        main(["bogus"])
    assert info.value.code == 2 and "usage" in capsys.readouterr().err
