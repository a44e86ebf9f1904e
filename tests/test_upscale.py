"""`python -m qdukd.upscale`: exported models and checkpoints on files and folders, tiling, bad input.

CLI behaviour is tested as a user meets it: a ``python -m qdukd.upscale`` process, its exit code,
its one ``error:`` line, and the files it leaves. Most runs use tiny ONNX graphs built here
(nearest-neighbour x4 and broken variants), which load and run in milliseconds.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from conftest import DEMO
from qdukd.errors import QdukdError
from qdukd.export.__main__ import main as export_main
from qdukd.images import read_image, to_tensor, to_uint8, write_image
from qdukd.tiling import tile_outputs, tiled_forward
from qdukd.upscale import load_runner, model_scale, upscale
from test_export_pipeline import write_student

ROOT = Path(__file__).resolve().parents[1]


def onnx_model(path: Path, shape: list, *, scales=(4, 4), blur: bool = False, times: float = 1.0) -> Path:
    """A one-input graph: [unpadded 3x3 blur, 1 pixel of padding] -> nearest Resize by ``scales`` -> Mul by ``times``.

    The blur cannot run on an input smaller than 3x3, as some real networks need a minimum size.
    """
    nodes, inits, x = [], [], "lr"
    if blur:
        nodes += [helper.make_node("Conv", [x, "w"], ["blurred"], kernel_shape=[3, 3]),
                  helper.make_node("Pad", ["blurred", "pads"], ["padded"], mode="edge")]
        inits += [helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 3, 3], [1 / 27] * 81),
                  helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])]
        x = "padded"
    lead = [1.0] * (len(shape) - 2)
    nodes += [helper.make_node("Resize", [x, "", "scales"], ["up"], mode="nearest"),
              helper.make_node("Mul", ["up", "times"], ["sr"])]
    inits += [helper.make_tensor("scales", TensorProto.FLOAT, [len(shape)], [*lead, *map(float, scales)]),
              helper.make_tensor("times", TensorProto.FLOAT, [], [times])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    dyn = ["N", 3, "H", "W"]
    return {"x4": onnx_model(root / "x4.onnx", dyn),
            "fixed": onnx_model(root / "fixed.onnx", [1, 3, 64, 64]),
            "gray": onnx_model(root / "gray.onnx", ["N", 1, "H", "W"]),
            "x2x3": onnx_model(root / "x2x3.onnx", dyn, scales=(2, 3)),
            "blur": onnx_model(root / "blur.onnx", dyn, blur=True),  # needs 3x3 or more
            "nan": onnx_model(root / "nan.onnx", dyn, times=float("nan"))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscale")
    ckpt = write_student(root / "w4a8.pt", "w4a8")
    # An untrained student: no quality floor.
    assert export_main([str(ckpt), "--out", str(root / "exp"), "--no-progress",
                        "--min-gain-over-bicubic", "-1000"]) == 0
    return ckpt, root / "exp" / "model.onnx"


def cli(*args, umask: int = 0o022, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qdukd.upscale", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, umask=umask, **kw)


def refused(res: subprocess.CompletedProcess, *words: str) -> str:
    """Assert exit 2 with exactly one ``error:`` line holding ``words``; returns the line."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def image(path: Path, h: int = 12, w: int = 10, seed: int = 0) -> Path:
    write_image(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def files(folder: Path) -> list[str]:
    """Every name under ``folder``, hidden temp files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- tiling: the same bytes as one whole-image pass ---------------------------------------------

def stencil_x4(x: np.ndarray) -> np.ndarray:
    """An SR 'model' whose receptive field is exactly 1 LR pixel and whose per-pixel arithmetic does not
    depend on where the tile starts: a 3x3 sharpening (zero padding; it overshoots [0, 1]), nearest x4."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = x.shape[-2:]
    y = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            y += np.float32(2.0 if (dy, dx) == (1, 1) else -0.125) * p[..., dy:dy + h, dx:dx + w]
    return y.repeat(4, axis=-2).repeat(4, axis=-1)


def test_tiled_uint8_equals_the_whole_image_exactly():
    lr = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    reference = to_uint8(torch.from_numpy(stencil_x4(to_tensor(lr).numpy())))  # the old code: float, then round
    assert reference.min() == 0 and reference.max() == 255  # clamping is exercised
    for tile in (0, 1, 5, 16, 37, 100):
        seen = []

        def fn(x):
            seen.append(x.shape[-2:])
            return stencil_x4(x)

        out = upscale(fn, lr, 4, tile=tile, overlap=1)
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), reference), tile
        if tile:  # only one tile (plus context) at a time was ever float
            assert max(max(s) for s in seen) <= tile + 2
    x = to_tensor(lr).numpy()
    assert np.array_equal(tiled_forward(stencil_x4, x, 4, 8, 1), stencil_x4(x))  # the float assembly too


def test_tiles_cover_the_output_once_and_check_the_scale():
    hits = np.zeros((20 * 3, 7 * 3), int)
    for rows, cols, sr in tile_outputs(lambda r, c: np.ones((1, 3, (r.stop - r.start) * 3, (c.stop - c.start) * 3)),
                                       20, 7, 3, tile=6, overlap=2):
        assert sr.shape[-2:] == (rows.stop - rows.start, cols.stop - cols.start)
        hits[rows, cols] += 1
    assert (hits == 1).all()
    with pytest.raises(QdukdError, match=r"returned 1x3x8x8 for a 4x4 input, not x4"):
        list(tile_outputs(lambda r, c: np.ones((1, 3, 8, 8)), 4, 4, 4, tile=0, overlap=0))


def test_tiles_match_the_whole_image(exported):
    # Real networks: float sums differ with the tile's shape, so within one 8-bit level.
    rng = np.random.default_rng(0)
    lr = read_image(next(iter(sorted((DEMO / "val").glob("*.png")))))[:44, :60]
    lr = np.clip(lr.astype(int) + rng.integers(-8, 9, lr.shape), 0, 255).astype(np.uint8)
    for model in exported:
        fn = load_runner(model)
        scale = model_scale(fn)
        whole = np.asarray(upscale(fn, lr, scale, tile=0, overlap=0))
        tiled = np.asarray(upscale(fn, lr, scale, tile=16, overlap=8))  # 12 tiles, ragged at the edges
        assert whole.shape == (176, 240, 3) and tiled.shape == whole.shape
        assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


# --- the CLI on good input ---------------------------------------------------------------------

def test_cli_files_and_folders(exported, tmp_path):
    ckpt, onnx_model_file = exported
    folder = tmp_path / "in"
    for i, path in enumerate(sorted((DEMO / "val").glob("*.png"))[:2]):
        write_image(folder / f"img{i}.png", read_image(path)[:32, :40])
    single = image(tmp_path / "single.jpg", 20, 24)
    out = tmp_path / "new" / "parents" / "out"  # missing parents are created
    res = cli(onnx_model_file, folder, single, "--out", out, "--tile", "16", umask=0o027)
    assert res.returncode == 0 and "wrote 3 image(s)" in res.stdout, res.stderr
    assert files(out) == ["img0.png", "img1.png", "single.png"]
    assert read_image(out / "img1.png").shape == (128, 160, 3)
    assert all((p.stat().st_mode & 0o777) == 0o640 for p in out.iterdir())  # the umask's, not mkstemp's 0600
    res = cli(ckpt, single, "--out", tmp_path / "out_ckpt")
    assert res.returncode == 0, res.stderr
    assert read_image(tmp_path / "out_ckpt" / "single.png").shape == (80, 96, 3)


def test_one_pixel_images_are_upscaled(exported, tmp_path):
    tiny = image(tmp_path / "dot.png", 1, 1)
    for model in exported:
        res = cli(model, tiny, "--out", tmp_path / model.suffix[1:])
        assert res.returncode == 0, res.stderr
        assert read_image(tmp_path / model.suffix[1:] / "dot.png").shape == (4, 4, 3)


def test_max_pixels_zero_lifts_the_limit(models, tmp_path):
    img = image(tmp_path / "a.png", 30, 30)
    refused(cli(models["x4"], img, "--out", tmp_path / "o", "--max-pixels", "899"),
            "a.png has 900 pixels, over the limit of 899", "--max-pixels N (0 = no limit)")
    assert not (tmp_path / "o").exists()
    assert cli(models["x4"], img, "--out", tmp_path / "o", "--max-pixels", "0").returncode == 0
    assert read_image(tmp_path / "o" / "a.png").shape == (120, 120, 3)


def test_pillows_default_limit_is_refused_before_decoding(models, tmp_path):
    # A header that claims 10000 x 9000 RGB (90 MP, over Pillow's 89.5 MP) with almost no data: the bomb shape.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 9000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    refused(cli(models["x4"], bomb, "--out", tmp_path / "o"),
            "bomb.png has 90,000,000 pixels, over the limit of 89,478,485", "--max-pixels")
    # Lifted, the header passes and the missing pixel data is what is reported.
    refused(cli(models["x4"], bomb, "--out", tmp_path / "o", "--max-pixels", "0"), "cannot read image", "bomb.png")


# --- the CLI on bad input: one line, exit 2, nothing half-written -----------------------------

def test_bad_models_are_refused(models, tmp_path):
    img = image(tmp_path / "a.png")
    out = tmp_path / "out"
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "garbage.onnx").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "model.plan").write_bytes(b"plan")
    (tmp_path / "folder").mkdir()
    cases = [
        (tmp_path / "none.onnx", ["model not found", "none.onnx"]),
        (tmp_path / "folder", ["is a folder", "model.onnx"]),
        (tmp_path / "empty.onnx", ["empty file", "empty.onnx"]),
        (tmp_path / "garbage.onnx", ["cannot load ONNX model", "garbage.onnx"]),
        (tmp_path / "notes.txt", ["cannot read checkpoint", "notes.txt"]),
        (tmp_path / "model.plan", ["cannot run", "model.plan"]),
        (models["fixed"], ["fixed.onnx has a fixed input size (1x3x64x64)", "dynamic height and width",
                           "qdukd.export"]),
        (models["gray"], ["gray.onnx takes a Nx1xHxW input", "N x 3 x H x W", "qdukd.export"]),
        (models["x2x3"], ["x2x3.onnx maps a 1x3x16x24 input to 1x3x32x72", "scale factor"]),
        (models["nan"], ["nan.onnx", "NaN or infinite values"]),
    ]
    for model, words in cases:
        refused(cli(model, img, "--out", out), *words)
    assert not out.exists()  # nothing was created for a bad model


def test_nonfinite_checkpoint_is_refused(tmp_path):
    """A checkpoint with a NaN weight: load_checkpoint refuses it (naming the tensor) before any image."""
    subprocess.run([sys.executable, "-m", "qdukd.train", "recipes/demo.toml", "--out", str(tmp_path / "run"),
                    "train.iters=2", "--no-progress"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["student"].items() if v.is_floating_point() and v.dim() == 4)
    ckpt["student"][name][0].view(-1)[0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    refused(cli(tmp_path / "nan.pt", image(tmp_path / "a.png"), "--out", tmp_path / "out"), "nan.pt")
    assert files(tmp_path / "out") == []


def test_bad_inputs_are_refused_before_any_work(models, tmp_path):
    good = image(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.md").write_text("no images here")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a png")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "ghost.png").symlink_to(tmp_path / "nowhere.png")  # a broken link in a folder
    (tmp_path / "twin").mkdir()
    image(tmp_path / "twin" / "good.jpg")
    out = tmp_path / "out"
    x4 = models["x4"]
    cases = [
        ((x4, tmp_path / "missing.png"), ["input not found", "missing.png"]),
        ((x4, tmp_path / "notes.txt"), ["notes.txt is not an image"]),
        ((x4, tmp_path / "nothing"), ["no images in", "nothing"]),
        ((x4, good, tmp_path / "zero.png"), ["cannot read image", "zero.png"]),
        ((x4, good, tmp_path / "text.png"), ["cannot read image", "text.png"]),
        ((x4, good, tmp_path / "links"), ["image not found", "ghost.png"]),
        ((x4, good, good), ["would both be written to", "good.png"]),
        ((x4, good, tmp_path / "twin"), ["good.png and", "twin/good.jpg would both be written"]),
        ((x4, good, "--tile", "-1"), ["--tile and --overlap must be >= 0"]),
        ((x4, good, "--max-pixels", "-5"), ["--max-pixels must be >= 0"]),
        ((x4, good, ""), ["an INPUT is an empty string"]),  # an unset "$VAR": not the working folder
    ]
    for args, words in cases:
        refused(cli(*args, "--out", out), *words)
    refused(cli(x4, good, "--out", ""), "--out is empty")
    assert not out.exists()  # the good image before the bad one was not upscaled either


def test_outputs_never_replace_inputs(models, tmp_path):
    photos = tmp_path / "photos"
    a = image(photos / "a.png")
    image(photos / "b.jpg", seed=1)
    (tmp_path / "link").symlink_to(photos)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    x4 = models["x4"]
    refused(cli(x4, photos, "--out", photos), "is the input folder")
    refused(cli(x4, photos, "--out", tmp_path / "link"), "is the input folder")  # the same folder by a symlink
    refused(cli(x4, photos, "--out", f"{photos}/./"), "is the input folder")
    refused(cli(x4, a, "--out", photos), "would replace the input", "a.png")  # a.png -> photos/a.png
    refused(cli(x4, tmp_path / "link" / "a.png", "--out", photos), "would replace the input")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(a)  # an output name that leads to the input
    refused(cli(x4, a, "--out", tmp_path / "out"), "would replace the input")
    (tmp_path / "hard").mkdir()
    os.link(a, tmp_path / "hard" / "a.png")  # the same file by another path, as a case-insensitive disk makes them
    refused(cli(x4, a, "--out", tmp_path / "hard"), "would replace the input")
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    # Writing beside the inputs is fine when no name is taken: b.jpg -> photos/b.png.
    assert cli(x4, photos / "b.jpg", "--out", photos).returncode == 0
    assert (photos / "b.png").is_file() and (photos / "a.png").read_bytes() == before["a.png"]


def test_unusable_output_folders(models, tmp_path):
    img = image(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    refused(cli(models["x4"], img, "--out", tmp_path / "file"), "--out", "is not a folder")
    refused(cli(models["x4"], img, "--out", tmp_path / "file" / "sub"), "cannot write in")
    (tmp_path / "o" / "a.png").mkdir(parents=True)
    refused(cli(models["x4"], img, "--out", tmp_path / "o"), "a folder of that name is in the way")
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    places = [readonly, readonly / "sub"] if not os.access(readonly, os.W_OK) else []  # root writes anyway
    if Path("/sys").is_dir():
        places.append(Path("/sys/qdukd_upscale_test"))  # not writable even for root
    if not places:
        pytest.skip("no unwritable folder to try (root, not Linux)")
    for place in places:
        refused(cli(models["x4"], img, "--out", place), "cannot write in", str(place))


def test_a_model_that_cannot_take_the_image_names_it(models, tmp_path):
    good, dot = image(tmp_path / "a.png", 8, 8), image(tmp_path / "b.png", 2, 5)
    out = tmp_path / "out"
    refused(cli(models["blur"], good, dot, "--out", out), "cannot upscale", "b.png (5x2 px)",
            "the model failed on a 2x5 input")
    assert files(out) == ["a.png"]  # the one before is complete; no temp file is left
    assert read_image(out / "a.png").shape == (32, 32, 3)


def test_a_truncated_image_mid_batch_keeps_the_earlier_outputs(models, tmp_path):
    folder = tmp_path / "in"
    image(folder / "a.png", 40, 40)
    full = image(tmp_path / "b.png", 40, 40, seed=2).read_bytes()
    (folder / "b.png").write_bytes(full[: len(full) // 2])  # the header is fine, the pixels are cut
    image(folder / "c.png")
    out = tmp_path / "out"
    refused(cli(models["x4"], folder, "--out", out), "cannot read image", "b.png", "truncated")
    assert files(out) == ["a.png"] and read_image(out / "a.png").shape == (160, 160, 3)


def test_ctrl_c_mid_batch_exits_130_with_whole_outputs(exported, tmp_path):
    folder = tmp_path / "in"
    for i in range(40):  # 128 px: seconds of work left after the first output, even on a loaded machine
        image(folder / f"{i:02d}.png", 128, 128, seed=i)
    out = tmp_path / "out"
    # As from a terminal: a test run launched in the background (nohup, a CI runner without job
    # control) hands its children an ignored SIGINT, which Python keeps, so restore the default.
    proc = subprocess.Popen([sys.executable, "-m", "qdukd.upscale", str(exported[1]), str(folder), "--out", str(out),
                             "--tile", "16"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not list(out.glob("*.png")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    written = files(out)
    assert 0 < len(written) < 40 and all(name.endswith(".png") and not name.startswith(".") for name in written)
    assert all(read_image(out / name).shape == (512, 512, 3) for name in written)
