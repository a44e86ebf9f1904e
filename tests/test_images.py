import warnings

import numpy as np
import pytest
from PIL import Image

import qdukd.images as images
from qdukd.errors import QdukdError
from qdukd.images import list_images, modcrop, read_image, to_tensor, to_uint8, write_image


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
    (tmp_path / "empty").mkdir()
    with pytest.raises(QdukdError, match="no images in .*empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(QdukdError, match="folder not found"):
        list_images(tmp_path / "missing")


def test_write_is_atomic_and_roundtrips(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    write_image(tmp_path / "sub" / "x.png", img)
    assert np.array_equal(read_image(tmp_path / "sub" / "x.png"), img)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]


def test_modcrop_and_tensor_roundtrip():
    img = np.random.default_rng(2).integers(0, 256, (11, 10, 3), dtype=np.uint8)
    assert modcrop(img, 4).shape == (8, 8, 3) and modcrop(img, 3).shape == (9, 9, 3)
    t = to_tensor(img)
    assert t.shape == (1, 3, 11, 10) and t.dtype.is_floating_point
    assert np.array_equal(to_uint8(t), img)
