from dataclasses import dataclass, field
from typing import Literal

import pytest

from qdukd.config import from_dict, override, to_dict
from qdukd.errors import QdukdError


@dataclass(frozen=True)
class Inner:
    iters: int = 10
    lr: float = 1e-4
    milestones: tuple[int, ...] = ()
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    train: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    args: dict = field(default_factory=dict)
    name: str = "x"


def test_unknown_key_suggests_the_closest():
    with pytest.raises(QdukdError, match=r"unknown key 'train.iter'; did you mean 'train.iters'"):
        from_dict(Outer, {"train": {"iter": 3}})
    with pytest.raises(QdukdError, match="unknown key 'zzz'; valid keys"):
        from_dict(Outer, {"zzz": 1})


def test_types_are_checked_and_coerced():
    o = from_dict(Outer, {"train": {"iters": 5, "lr": 1, "milestones": [2, 4]}})
    assert o.train == Inner(5, 1.0, (2, 4)) and isinstance(o.train.lr, float)
    with pytest.raises(QdukdError, match="train.iters must be int"):
        from_dict(Outer, {"train": {"iters": "5"}})
    with pytest.raises(QdukdError, match="train.mode must be one of 'a', 'b'"):
        from_dict(Outer, {"train": {"mode": "c"}})
    with pytest.raises(QdukdError, match="train.iters must be int"):
        from_dict(Outer, {"train": {"iters": True}})


def test_overrides_parse_by_type_and_roundtrip():
    o = from_dict(Outer, {})
    o = override(o, "train.iters", "1000")
    o = override(o, "train.milestones", "[100, 200]")
    o = override(o, "name", "edsr")
    o = override(o, "args.num_feat", "32")
    o = override(o, "extra.lr", "0.5")  # an optional section springs into existence
    assert o.train.iters == 1000 and o.train.milestones == (100, 200) and o.name == "edsr"
    assert o.args == {"num_feat": 32} and o.extra == Inner(lr=0.5)
    assert from_dict(Outer, to_dict(o)) == o
    with pytest.raises(QdukdError, match="did you mean 'train.iters'"):
        override(o, "train.itres", "3")
