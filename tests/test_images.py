import warnings

import numpy as np
import pytest
from PIL import Image

import qdukd.images as images
from qdukd.errors import QdukdError
from qdukd.images import (image_size, list_images, modcrop, read_image, set_max_pixels, to_tensor, to_uint8,
                          write_image)


def test_formats_become_rgb8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for ext in ("png", "bmp", "tiff", "webp"):
        Image.fromarray(rgb).save(tmp_path / f"a.{ext}", **({"lossless": True} if ext == "webp" else {}))
        assert np.array_equal(read_image(tmp_path / f"a.{ext}"), rgb), ext
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (9, 7, 3)


def test_gray_rgba_and_16bit(tmp_path, monkeypatch):
    gray = np.arange(63, dtype=np.uint8).reshape(9, 7)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (9, 7, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))

    g16 = (np.arange(63, dtype=np.uint16).reshape(9, 7) * 1000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert np.array_equal(read_image(tmp_path / "g16.png")[..., 0], (g16 >> 8).astype(np.uint8))

    monkeypatch.setattr(images, "_warned_alpha", False)
    rgba = np.full((4, 4, 4), 200, np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba).save(tmp_path / "b.png")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert read_image(tmp_path / "a.png").shape == (4, 4, 3)
        read_image(tmp_path / "b.png")
    assert len([x for x in w if "alpha" in str(x.message)]) == 1  # said once


def test_bad_images_name_the_file(tmp_path):
    with pytest.raises(QdukdError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(QdukdError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "empty" / "folder.png").mkdir(parents=True)  # named like an image, but a folder
    with pytest.raises(QdukdError, match="no images in .*empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(QdukdError, match="folder not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "zero.png").write_bytes(b"")
    for check in (read_image, image_size):
        with pytest.raises(QdukdError, match="cannot read image .*zero.png"):
            check(tmp_path / "zero.png")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about some damaged tags
@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "tiff", "webp"])
def test_damaged_files_are_one_error_naming_them(tmp_path, fmt):
    # Truncations and byte flips make Pillow raise many exception types; each must become a QdukdError.
    rng = np.random.default_rng(3)
    good = tmp_path / f"good.{fmt}"
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    refused = 0
    for i in range(60):
        damaged = bytearray(data[: rng.integers(0, len(data))] if i % 2 else data)
        if i % 2 == 0:
            for at in rng.integers(0, len(data), 4):
                damaged[at] = rng.integers(0, 256)
        bad = tmp_path / f"bad{i}.{fmt}"
        bad.write_bytes(bytes(damaged))
        try:
            assert read_image(bad).shape[2] == 3  # some flips land in pixel data: still an image
        except QdukdError as e:
            assert str(e).count("\n") == 0 and str(bad) in str(e)
            refused += 1
    assert refused >= 30  # every truncation at least


def test_max_pixels_refuses_big_images_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put Pillow's default back after
    Image.fromarray(np.zeros((10, 11, 3), np.uint8)).save(tmp_path / "a.png")  # 110 pixels
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "b.png")  # 300: where Pillow raises, not warns
    set_max_pixels(100)
    for name, pixels in (("a.png", "110"), ("b.png", "300")):
        for check in (read_image, image_size):
            with pytest.raises(QdukdError) as e:
                check(tmp_path / name)
            assert f"{name} has {pixels} pixels, over the limit of 100" in str(e.value)
            assert "--max-pixels N (0 = no limit)" in str(e.value)
    set_max_pixels(110)
    assert read_image(tmp_path / "a.png").shape == (10, 11, 3)
    set_max_pixels(0)
    assert Image.MAX_IMAGE_PIXELS is None and image_size(tmp_path / "b.png") == (30, 10)
    with pytest.raises(QdukdError, match="--max-pixels must be >= 0"):
        set_max_pixels(-1)


def test_write_is_atomic_and_roundtrips(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    write_image(tmp_path / "sub" / "x.png", img)
    assert np.array_equal(read_image(tmp_path / "sub" / "x.png"), img)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]
    write_image(tmp_path / "sub" / "y.png", Image.fromarray(img))  # a Pillow image is saved as it is
    assert np.array_equal(read_image(tmp_path / "sub" / "y.png"), img)


def test_modcrop_and_tensor_roundtrip():
    img = np.random.default_rng(2).integers(0, 256, (11, 10, 3), dtype=np.uint8)
    assert modcrop(img, 4).shape == (8, 8, 3) and modcrop(img, 3).shape == (9, 9, 3)
    t = to_tensor(img)
    assert t.shape == (1, 3, 11, 10) and t.dtype.is_floating_point
    assert np.array_equal(to_uint8(t), img)
