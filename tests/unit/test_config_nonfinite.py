"""Property: every numeric config key rejects non-finite values at validate (issue 17, class 2).

The keys are found by walking the pydantic models generically (nested sections, lists of sections such as
``teachers``, and the per-method ``<method>.train`` overrides, which are TrainConfig keys), so a key added later
is covered without touching this test. Each key gets ``.inf``, ``-.inf`` and ``.nan`` in a YAML file; validation
must fail with one line naming the file and the dotted key.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from cotdistill.config import METHOD_NAMES, Config, TrainConfig, load_config
from cotdistill.errors import CotdistillError

# required fields of list items, so that the item itself validates
_REQUIRED = {"teachers": {"name": "t", "model": "m"}}


def _members(annotation) -> tuple:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(annotation) for a in _members(arg))
    return (annotation,)


def _is_number(t) -> bool:
    return t in (int, float)


def numeric_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys (``teachers[0].timeout_s``) of every int/float field reachable from ``model``."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        for t in _members(field.annotation):
            origin = typing.get_origin(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                keys += numeric_keys(t, dotted + ".")
            elif origin is list:
                item = typing.get_args(t)[0]
                for it in _members(item):
                    if isinstance(it, type) and issubclass(it, BaseModel):
                        keys += numeric_keys(it, dotted + "[0].")
                    elif _is_number(it):
                        keys.append(dotted + "[0]")
            elif _is_number(t):
                keys.append(dotted)
    return sorted(set(keys))


KEYS = numeric_keys(Config) + [f"{m}.train.{k}" for m in METHOD_NAMES for k in numeric_keys(TrainConfig)]


def _nested(dotted: str, value) -> dict:
    """``{"teachers": [{"name": "t", "model": "m", "timeout_s": value}]}`` for ``teachers[0].timeout_s``."""
    root: dict = {}
    node: typing.Any = root
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.endswith("[0]"):
            name = part[:-3]
            item = {} if not last else value
            if isinstance(item, dict):
                item.update(_REQUIRED.get(name, {}))
            node[name] = [item]
            node = item
        elif last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
    return root


def test_the_walk_finds_the_keys_it_should():
    assert {"train.lr", "teachers[0].temperature", "mind.metanet.dropout", "compare.seeds[0]", "mind.train.lr",
            "eval.math_verify_timeout_s", "curate.dedup_threshold"} <= set(KEYS)
    assert len(KEYS) > 150


@pytest.mark.parametrize("dotted", KEYS)
def test_numeric_key_rejects_non_finite(dotted, tmp_path):
    for value in (math.inf, -math.inf, math.nan):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(_nested(dotted, value)))
        with pytest.raises(CotdistillError) as e:
            load_config(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg
        assert dotted in msg and "finite" in msg, msg


def test_finite_values_of_the_same_keys_still_load(tmp_path):
    """The walk writes valid configs: the key's default value loads (so a failure above is the non-finite value)."""
    cfg = Config()
    for dotted in ("train.lr", "teachers[0].temperature", "mind.train.lr", "compare.seeds[0]"):
        path = Path(tmp_path) / "ok.yaml"
        defaults = {"teachers[0].temperature": 0.7, "mind.train.lr": 1e-4, "compare.seeds[0]": 1}
        default = defaults.get(dotted, cfg.train.lr)
        path.write_text(yaml.safe_dump(_nested(dotted, default)))
        load_config(path)
