"""`python -m qdukd.upscale`: exported models and checkpoints on files and folders, tiling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DEMO
from qdukd.export.__main__ import main as export_main
from qdukd.images import read_image, write_image
from qdukd.upscale import load_runner, main, model_scale, upscale
from test_export_pipeline import write_student


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale")
    ckpt = write_student(root / "w4a8.pt", "w4a8")
    assert export_main([str(ckpt), "--out", str(root / "exp"), "--no-progress"]) == 0
    return ckpt, root / "exp" / "model.onnx"


def test_tiles_match_the_whole_image(exported):
    rng = np.random.default_rng(0)
    lr = read_image(next(iter(sorted((DEMO / "val").glob("*.png")))))[:44, :60]
    lr = np.clip(lr.astype(int) + rng.integers(-8, 9, lr.shape), 0, 255).astype(np.uint8)
    for model in exported:
        fn = load_runner(model)
        scale = model_scale(fn)
        whole = upscale(fn, lr, scale, tile=0, overlap=0)
        tiled = upscale(fn, lr, scale, tile=16, overlap=8)  # 12 tiles, ragged at the edges
        assert whole.shape == (176, 240, 3) and tiled.shape == whole.shape
        assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_cli_files_and_folders(exported, tmp_path, capsys):
    ckpt, onnx_model = exported
    folder = tmp_path / "in"
    for i, path in enumerate(sorted((DEMO / "val").glob("*.png"))[:2]):
        write_image(folder / f"img{i}.png", read_image(path)[:32, :40])
    single = tmp_path / "single.png"
    write_image(single, read_image(folder / "img0.png")[:20, :24])
    assert main([str(onnx_model), str(folder), "--out", str(tmp_path / "out"), "--tile", "16"]) == 0
    assert read_image(tmp_path / "out" / "img1.png").shape == (128, 160, 3)
    assert main([str(ckpt), str(single), "--out", str(tmp_path / "out_ckpt")]) == 0
    assert read_image(tmp_path / "out_ckpt" / "single.png").shape == (80, 96, 3)
    assert "wrote 1 image(s)" in capsys.readouterr().out


def test_bad_input_exits_2(exported, tmp_path, capsys):
    ckpt, onnx_model = exported
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"garbage")
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    image = tmp_path / "a.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    out = str(tmp_path / "out")
    cases = [
        (main([str(tmp_path / "none.onnx"), str(image), "--out", out]), "model not found"),
        (main([str(corrupt), str(image), "--out", out]), "cannot load ONNX model"),
        (main([str(text), str(image), "--out", out]), "cannot read checkpoint"),
        (main([str(onnx_model), str(tmp_path / "missing.png"), "--out", out]), "input not found"),
        (main([str(onnx_model), str(text), "--out", out]), "is not an image"),
        (main([str(onnx_model), str(image), str(image), "--out", out]), "would both be written"),
    ]
    errors = capsys.readouterr().err.strip().splitlines()
    assert [c for c, _ in cases] == [2] * len(cases)
    for line, (_, words) in zip(errors, cases):
        assert line.startswith("error: ") and words in line
