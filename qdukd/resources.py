"""The export profiles and training recipes shipped with qdukd, found by name where it is installed.

They live in the repository's top-level ``export/`` and ``recipes/`` folders, which
pyproject.toml ships as the data-only packages ``qdukd.profiles`` and ``qdukd.recipes``: a wheel
carries copies, an editable install maps the package names onto the folders. A profile's name is
its file name without ``.toml`` (``onnxruntime-int8``); a recipe's is its path under ``recipes/``
without ``.toml`` (``demo``, ``cpu/w4a4``). Wherever a name is accepted, an existing file of
that name wins; a folder does not (``--out demo`` must not hide the ``demo`` recipe).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import QdukdError

PROFILES = "qdukd.profiles"
RECIPES = "qdukd.recipes"


def _shipped(package: str) -> dict[str, Path]:
    """Every ``.toml`` under ``package``'s folder, keyed by its relative POSIX path minus ``.toml``.

    Args:
        package: ``PROFILES`` or ``RECIPES``.
    """
    found: dict[str, Path] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".toml"):
                # pip installs packages as files, so every entry is a real path (recipes need
                # one: their ``extends`` names a sibling file).
                found[prefix + child.name.removesuffix(".toml")] = Path(child)

    try:
        root = files(package)
    except ModuleNotFoundError:  # an install made before the package existed, or no install
        raise QdukdError(f"{package} is not installed; reinstall qdukd (pip install -e . in a "
                         "checkout)") from None
    walk(root, "")
    return dict(sorted(found.items()))


def _resolve(package: str, name_or_path: str | Path, what: str) -> Path:
    """The file ``name_or_path``, else the shipped file of that name in ``package``, else the
    existing path (a folder: its reader says so).

    Raises:
        QdukdError: none of these; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = _shipped(package).get(str(name_or_path))
    if shipped is not None or path.exists():
        return shipped or path
    raise QdukdError(f"unknown {what} {str(name_or_path)!r} (no such file, and not a shipped {what}); "
                     f"available: {', '.join(_shipped(package)) or 'none'} (or pass a .toml path)")


def shipped_profiles() -> list[str]:
    """Names of the shipped export profiles, sorted."""
    return list(_shipped(PROFILES))


def shipped_recipes() -> list[str]:
    """Names of the shipped training recipes (``demo``, ``cpu/w4a4``, ...), sorted."""
    return list(_shipped(RECIPES))


def profile_path(target: str | Path) -> Path:
    """The file of an export profile: a path to a ``.toml`` file (an existing file wins) or a
    shipped profile's name.

    Raises:
        QdukdError: no such path and no shipped one of that name; the message lists the names.
    """
    return _resolve(PROFILES, target, "export profile")


def recipe_path(recipe: str | Path) -> Path:
    """The file of a training recipe: a path to a ``.toml`` file (an existing file wins) or a
    shipped recipe's name.

    Raises:
        QdukdError: no such path and no shipped one of that name; the message lists the names.
    """
    return _resolve(RECIPES, recipe, "recipe")
