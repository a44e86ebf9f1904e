import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO, shared_path
from qdukd.data import TrainPatches, find_pairs, load_pair, load_set, random_crop_flip, set_name
from qdukd.errors import QdukdError
from qdukd.resize import imresize


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_hr_folder_makes_lr_with_matlab_bicubic(tmp_path):
    hr = _img(50, 42)
    _save(tmp_path / "a.png", hr)
    (pair,) = find_pairs(tmp_path, 4)
    lr, hr_c = load_pair(pair, 4)
    assert hr_c.shape == (48, 40, 3) and np.array_equal(hr_c, hr[:48, :40])
    assert np.array_equal(lr, imresize(hr[:48, :40], 0.25))


def test_basicsr_layout_uses_lr_files_and_checks_sizes(tmp_path):
    _save(tmp_path / "S" / "HR" / "a.png", _img(16, 16))
    lr = _img(8, 8, 1)
    _save(tmp_path / "S" / "LR_bicubic" / "X2" / "ax2.png", lr)
    (pair,) = find_pairs(tmp_path / "S", 2)
    assert np.array_equal(load_pair(pair, 2)[0], lr)
    assert set_name(tmp_path / "S") == "S" and set_name(tmp_path / "S" / "HR") == "S"
    # x4: no LR folder -> made on the fly
    assert find_pairs(tmp_path / "S", 4)[0].lr_path is None
    _save(tmp_path / "S" / "LR_bicubic" / "X2" / "ax2.png", _img(7, 8))
    with pytest.raises(QdukdError, match="ax2.png.*wrong --scale"):
        load_pair(find_pairs(tmp_path / "S", 2)[0], 2)
    _save(tmp_path / "S" / "HR" / "b.png", _img(16, 16))
    with pytest.raises(QdukdError, match="LR image missing: .*bx2.png"):
        find_pairs(tmp_path / "S", 2)


def test_bad_folders(tmp_path):
    with pytest.raises(QdukdError, match="not found"):
        find_pairs(tmp_path / "nope", 2)
    with pytest.raises(QdukdError, match="no images"):
        find_pairs(tmp_path, 2)
    _save(tmp_path / "small.png", _img(40, 40))
    with pytest.raises(QdukdError, match="small.png.*smaller than"):
        TrainPatches([tmp_path], 4, 12, progress=False)


def test_crop_is_aligned_and_augmented():
    hr = _img(64, 48)
    lr = imresize(hr, 0.25)
    seen = set()
    for s in range(40):
        rng = np.random.default_rng(s)
        lp, hp, (tp,) = random_crop_flip(lr, hr, 4, 6, rng, aligned=(hr + 1,))
        assert np.array_equal(tp, hp + 1)  # extra HR-aligned arrays are cut the same way
        assert lp.shape == (6, 6, 3) and hp.shape == (24, 24, 3)
        # Aligned: the HR patch downscaled is the LR patch up to the resize's border handling.
        found = False
        for k in range(8):
            cand = np.rot90(hp, k % 4) if k < 4 else np.rot90(hp[:, ::-1], k % 4)
            for t in range(0, 16 - 5):
                for l in range(0, 12 - 5):
                    if np.array_equal(hr[t * 4:t * 4 + 24, l * 4:l * 4 + 24], cand):
                        found = True
                        seen.add(k)
        assert found
    assert len(seen) > 4  # flips and transposes happen


def test_train_patches_are_deterministic_per_index():
    ds = TrainPatches([DEMO / "train"], 4, 16, seed=3, progress=False)
    a, b = ds[17], ds[17]
    assert np.array_equal(a["lr"], b["lr"]) and a["lr"].shape == (3, 16, 16) and a["hr"].shape == (3, 64, 64)
    assert not np.array_equal(ds[18]["hr"], a["hr"])
    # One pass over len(ds) samples visits every image once.
    assert sorted(ds.image_index(i) for i in range(len(ds))) == list(range(len(ds)))


def test_benchmark_set_loads_with_modcrop():
    set14 = shared_path("benchmarks", "Set14")
    items = load_set(set14, 3)
    assert len(items) == 14
    for name, lr, hr in items:
        assert hr.shape[0] % 3 == 0 and hr.shape[1] % 3 == 0
        assert lr.shape[:2] == (hr.shape[0] // 3, hr.shape[1] // 3)


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of a square (k < 4: rotations; k >= 4: mirror, then rotate)."""
    return np.rot90(x if k < 4 else x[:, ::-1], k % 4)


def _to_uint8(t) -> np.ndarray:
    return (t.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)


def test_every_training_pair_is_one_aligned_crop_of_the_lr_and_hr_images(tmp_path):
    # Unrelated random LR and HR images (a BasicSR-layout set): a pair can only match them if both
    # patches come from the same place under the same flip/rotation; the noise makes each 6x6 LR
    # window unique, so the undoing symmetry and the position are found by exhaustive search.
    s, patch = 4, 6
    lr_img, hr_img = _img(20, 17, 1), _img(80, 68, 2)
    _save(tmp_path / "S" / "HR" / "a.png", hr_img)
    _save(tmp_path / "S" / "LR_bicubic" / "X4" / "ax4.png", lr_img)
    ds = TrainPatches([tmp_path / "S"], s, patch, seed=5, augment=True, progress=False)
    windows = np.lib.stride_tricks.sliding_window_view(lr_img, (patch, patch, 3))[:, :, 0]
    seen = set()
    for i in range(100):
        sample = ds[i]
        lr, hr = _to_uint8(sample["lr"]), _to_uint8(sample["hr"])
        hits = [(k, t, l) for k in range(8)
                for t, l in zip(*np.nonzero(np.all(windows == _dihedral(lr, k), axis=(2, 3, 4))))]
        assert len(hits) == 1, f"sample {i}: LR patch is not a unique crop of the LR image: {hits}"
        k, t, l = hits[0]
        assert np.array_equal(_dihedral(hr, k), hr_img[t * s:(t + patch) * s, l * s:(l + patch) * s]), \
            f"sample {i}: HR patch is not the LR patch's crop of the HR image under the same symmetry"
        seen.add(k)
    assert seen == set(range(8))  # every flip/rotation combination was drawn and checked


def test_a_set_file_lists_images_relative_to_itself_and_a_holdout_is_never_trained_on(tmp_path):
    images = sorted((DEMO / "train").glob("*.png"))
    split = tmp_path / "lists" / "val.txt"
    split.parent.mkdir()
    split.write_text(f"# two held-out images\n{os.path.relpath(images[0], split.parent)}\n\n"
                     f"{os.path.relpath(images[2], split.parent)}  # a comment\n")
    assert [p.hr_path for p in find_pairs(split, 4)] == [images[0].resolve(), images[2].resolve()]
    assert set_name(split) == "val"
    ds = TrainPatches([DEMO / "train"], 4, 16, progress=False, holdout=[split])
    assert sorted(ds.names) == sorted(p.stem for p in images if p not in (images[0], images[2]))
    assert len(ds.names) == len(images) - 2
    with pytest.raises(QdukdError, match="not among the training images"):
        TrainPatches([DEMO / "val"], 4, 16, progress=False, holdout=[split])
    everything = tmp_path / "all.txt"
    everything.write_text("\n".join(str(p) for p in images))
    with pytest.raises(QdukdError, match="holds out every training image"):
        TrainPatches([DEMO / "train"], 4, 16, progress=False, holdout=[everything])
    (tmp_path / "bad.txt").write_text("nope.png\n")
    with pytest.raises(QdukdError, match="lists .*nope.png, which does not exist"):
        find_pairs(tmp_path / "bad.txt", 4)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(QdukdError, match="lists no images"):
        find_pairs(tmp_path / "empty.txt", 4)


def test_the_shipped_validation_split_is_part_of_the_training_photos():
    train = shared_path("train")
    split = Path(__file__).resolve().parents[1] / "recipes" / "splits" / "photos_val.txt"
    held = [p.hr_path for p in find_pairs(split, 4)]
    assert len(held) == 19 and len(set(held)) == 19
    every_8th = [sorted((train / s).iterdir())[::8] for s in ("BSD68", "SunHays80")]
    assert held == [p.resolve() for group in every_8th for p in group]
