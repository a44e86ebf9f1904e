"""Shipped profiles and recipes are found by name through the installed package (qdukd.resources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdukd import resources
from qdukd.errors import QdukdError
from qdukd.resources import profile_path, recipe_path, shipped_profiles, shipped_recipes
from qdukd.tomlcompat import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_ships_every_package_and_maps_the_data_folders():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    # The package list is explicit (find cannot map folders): a new subpackage must be added to it.
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qdukd").rglob("__init__.py")}
    assert set(tool["packages"]) == code | {"qdukd.profiles", "qdukd.recipes"}
    assert tool["package-dir"] == {"qdukd.profiles": "export", "qdukd.recipes": "recipes"}


def test_names_are_the_files_of_the_repository_folders():
    # The tests run on the README's editable install, whose packages are the folders themselves.
    assert shipped_profiles() == sorted(p.stem for p in (ROOT / "export").glob("*.toml"))
    recipes = sorted(p.relative_to(ROOT / "recipes").with_suffix("").as_posix()
                     for p in (ROOT / "recipes").rglob("*.toml"))
    assert shipped_recipes() == recipes
    assert {"demo", "cpu/w4a4", "div2k/edsr_x4"} <= set(recipes)  # names the docs use
    for name in shipped_profiles():
        assert profile_path(name).samefile(ROOT / "export" / f"{name}.toml")
    for name in recipes:
        assert recipe_path(name).samefile(ROOT / "recipes" / f"{name}.toml")


def test_an_existing_file_wins_and_a_folder_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo").write_text("[train]\niters = 1\n")
    assert recipe_path("demo") == Path("demo")
    Path("onnxruntime-int8").mkdir()  # e.g. an earlier --out onnxruntime-int8
    assert profile_path("onnxruntime-int8").samefile(ROOT / "export" / "onnxruntime-int8.toml")
    custom = tmp_path / "edge.toml"
    custom.write_text("")
    assert profile_path(custom) == custom and recipe_path(str(custom)) == custom
    Path("runs").mkdir()  # neither a file nor a name: passed on for its reader to report
    assert recipe_path("runs") == Path("runs")


def test_unknown_names_list_what_is_shipped():
    with pytest.raises(QdukdError, match=r"unknown recipe .cpu/w9a9. .*available: .*cpu/w4a4, .*demo"):
        recipe_path("cpu/w9a9")
    with pytest.raises(QdukdError, match=r"unknown export profile 'tensorrt-fp4' .*available: .*onnxruntime-int8"):
        profile_path("tensorrt-fp4")


def test_an_install_without_the_data_package_says_to_reinstall(monkeypatch):
    monkeypatch.setattr(resources, "RECIPES", "qdukd.no_such_data")
    with pytest.raises(QdukdError, match=r"qdukd.no_such_data is not installed; reinstall qdukd"):
        shipped_recipes()
