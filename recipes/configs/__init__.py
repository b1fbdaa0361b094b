"""Built-in recipes, one python file each with ``get_config(arg=None) -> ConfigDict``.

``get("digits_mlp")`` loads ``recipes/configs/digits_mlp.py``; ``get("path/to/file.py")``
loads a user's file; ``get("name:arg")`` passes ``arg`` to ``get_config`` (as
``ml_collections.config_flags`` does). Written by hand because ml_collections resolves only
file paths, not names of files shipped inside a package.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

_HERE = pathlib.Path(__file__).resolve().parent


def names() -> list[str]:
    """Returns the names of the built-in configs."""
    return sorted(p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_"))


def resolve_path(name_or_path: str) -> str:
    """Returns the file behind a built-in name or a user's path (``:arg`` kept).

    Raises:
        ValueError: neither a built-in name nor an existing ``.py`` file.
    """
    base, sep, arg = name_or_path.partition(":")
    if base in names():
        return str(_HERE / f"{base}.py") + sep + arg
    if base.endswith(".py") and os.path.isfile(base):
        return name_or_path
    if base.endswith(".py"):
        raise ValueError(f"--config: file {base!r} does not exist; give a path to a .py file "
                         f"defining get_config() or one of the built-in names: {names()}")
    raise ValueError(f"--config: unknown config {base!r}; use one of {names()} "
                     "or a path to a .py file defining get_config()")


def get(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads a config by built-in name or path, ``name:arg`` passing ``arg`` to get_config."""
    path, _, arg = resolve_path(name_or_path).partition(":")
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem + "_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file with a syntax or import error
        raise ValueError(f"--config: could not load {path}: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path} does not define get_config(); add "
                         "`def get_config(arg=None): return ml_collections.ConfigDict(...)`")
    return module.get_config(arg) if arg else module.get_config()


def complete(config: Any) -> ml_collections.ConfigDict:
    """Returns the full tree: ``base.get_config()`` updated with ``config``'s fields.

    Lets Python users pass a partial dict (``{"optimizer": {"learning_rate": 3e-4}}``).

    Raises:
        ValueError: a field that the tree does not have, named with its dotted path.
    """
    from recipes.configs import base

    full = base.get_config()
    if config is None:
        return full
    _merge(full, config.to_dict() if hasattr(config, "to_dict") else dict(config), "")
    return full


def _merge(into: ml_collections.ConfigDict, src: Mapping[str, Any], prefix: str) -> None:
    for key, value in src.items():
        path = prefix + key
        if key not in into:
            valid = ", ".join(sorted(into.keys()))
            raise ValueError(f"config: unknown field {path!r}; valid fields here: {valid}")
        if isinstance(into[key], ml_collections.ConfigDict) and key != "activation_kw":
            if not isinstance(value, Mapping):
                raise ValueError(f"config: {path} must be a mapping, got {value!r}")
            _merge(into[key], value, path + ".")
        else:
            try:
                into[key] = tuple(value) if isinstance(value, list) else value
            except TypeError as e:  # ConfigDict is typed: "abc" cannot replace a float
                raise ValueError(f"config: {path} must be a {type(into[key]).__name__}, "
                                 f"got {value!r}") from e


def config_fields(cfg: Any, branch: str) -> dict[str, Any]:
    """Returns the ``branch`` fields of ``cfg`` over the defaults of ``configs/base.py``.

    Args:
        cfg: the branch as a ConfigDict, a plain dict (missing fields take the defaults),
            a bare name (``"adam"`` means ``{"name": "adam"}``) or None (all defaults).
        branch: the branch of the config tree, e.g. ``"optimizer"``.

    Returns:
        A plain dict with every field of the branch.

    Raises:
        ValueError: a field the branch does not have (the valid fields are listed).
    """
    from recipes.configs import base

    fields = base.get_config()[branch].to_dict()
    if cfg is None:
        given: dict[str, Any] = {}
    elif isinstance(cfg, str):
        given = {"name": cfg}
    elif hasattr(cfg, "to_dict"):
        given = cfg.to_dict()
    elif isinstance(cfg, Mapping):
        given = dict(cfg)
    else:
        raise ValueError(f"{branch} must be a config branch (ConfigDict or dict), a name or "
                         f"None, got {type(cfg).__name__}: {cfg!r}")
    unknown = sorted(set(given) - set(fields))
    if unknown:
        bad = ", ".join(f"{branch}.{k}" for k in unknown)
        raise ValueError(f"unknown field(s) {bad}; valid fields of {branch}: {sorted(fields)}")
    fields.update(given)
    if isinstance(fields.get("name"), str):
        fields["name"] = fields["name"].strip().lower()
    return fields
