"""Built-in recipes, one python file each with ``get_config(arg=None) -> ConfigDict``.

``get("digits_mlp")`` loads ``recipes/configs/digits_mlp.py``; ``get("path/to/file.py")``
loads a user's file; ``get("name:arg")`` passes ``arg`` to ``get_config`` (as
``ml_collections.config_flags`` does). Written by hand because ml_collections resolves only
file paths, not names of files shipped inside a package.

``get("runs/x/config.json")`` reads the tree a run saved (``best_config.json`` of a search
too), so "reproduce this run" is ``--config=runs/x/config.json``. A JSON file is data and
runs no code: one whose ``model.arch`` names code to import (``module:function``,
``file.py:function``) is refused unless the caller trusts it (``trust=True``; the command
line's ``--trust_config``).
"""

from __future__ import annotations

import importlib.util
import json
import numbers
import os
import pathlib
import reprlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from recipes.configs import base as base_config

_HERE = pathlib.Path(__file__).resolve().parent


def names() -> list[str]:
    """Returns the names of the built-in configs."""
    return sorted(p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_"))


def resolve_path(name_or_path: str) -> str:
    """Returns the file behind a built-in name or a user's path (``:arg`` kept).

    Raises:
        ValueError: neither a built-in name nor an existing ``.py`` or ``.json`` file.
    """
    if not isinstance(name_or_path, str):
        raise ValueError(f"--config must be a built-in name (one of {names()}) or a path to "
                         f"a .py or .json file, got {type(name_or_path).__name__}: "
                         f"{reprlib.repr(name_or_path)}")
    if is_json(name_or_path):
        if not os.path.isfile(name_or_path):
            raise ValueError(f"--config: file {name_or_path!r} does not exist; give a run's "
                             "config.json, a search's best_config.json, a .py file defining "
                             f"get_config() or one of the built-in names: {names()}")
        return name_or_path
    base, sep, arg = name_or_path.partition(":")
    if base in names():
        return str(_HERE / f"{base}.py") + sep + arg
    if base.endswith(".py") and os.path.isfile(base):
        return name_or_path
    if base.endswith(".py"):
        raise ValueError(f"--config: file {base!r} does not exist; give a path to a .py file "
                         f"defining get_config() or one of the built-in names: {names()}")
    raise ValueError(f"--config: unknown config {base!r}; use one of {names()} "
                     "or a path to a .py file defining get_config() or a .json config")


def is_json(name_or_path: Any) -> bool:
    """Whether ``--config`` names a JSON config (a run's ``config.json``, ``best_config.json``)."""
    return isinstance(name_or_path, str) and name_or_path.lower().endswith(".json")


def get(name_or_path: str, *, trust: bool = False) -> ml_collections.ConfigDict:
    """Loads a config by built-in name or path, ``name:arg`` passing ``arg`` to get_config.

    A ``get_config`` that returns a plain dict is accepted: nested dicts become nested
    ConfigDicts and lists become tuples, so the CLI can override every field. A ``.json``
    path is read by :func:`load_json`.

    Args:
        name_or_path: a built-in name, a ``.py`` file (either with ``:arg``) or a ``.json``.
        trust: let a JSON config name code to import (:func:`code_fields`).

    Raises:
        ValueError: an unknown name or missing file, or a file that fails at import, whose
            ``get_config`` fails, or returns neither a ConfigDict nor a dict; one line that
            names the file and the exception. A JSON config that names code, untrusted.
    """
    if is_json(name_or_path):
        config, _ = load_json(resolve_path(name_or_path))
        code = code_fields(config)
        if code and not trust:
            raise ValueError(f"{name_or_path}: {describe_code(code)}; a JSON config is data "
                             "and runs no code unless you trust it: "
                             f"configs.get({name_or_path!r}, trust=True)")
        return config
    path, _, arg = resolve_path(name_or_path).partition(":")
    module = _load(path)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"--config: {path} does not define get_config(); add "
                         "`def get_config(arg=None): return ml_collections.ConfigDict(...)`")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # anything a user's get_config raises: one line, not a traceback
        call = f"get_config({arg!r})" if arg else "get_config()"
        raise ValueError(f"--config: {call} in {path} raised {_describe(e)}") from e
    if isinstance(config, ml_collections.ConfigDict):
        return config
    if config is None:
        raise ValueError(f"--config: get_config() in {path} returned None; return a ConfigDict "
                         "(did you forget `return`?)")
    if isinstance(config, Mapping):
        return ml_collections.ConfigDict(_tuples(config))
    raise ValueError(f"--config: get_config() in {path} returned type {type(config).__name__}; "
                     "return an ml_collections.ConfigDict or a dict")


def load_json(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """Reads a config saved as JSON: a run's ``config.json`` or a search's ``best_config.json``.

    The tree lands in the shape of a built-in config (lists become tuples, as the tree
    holds them), so ``--config.a.b=value`` overrides it; :func:`complete` then checks every
    field. The run's ``origins`` (what came from a user's model) is returned apart.

    Returns:
        ``(config, origins)``; ``origins`` is ``{}`` when the file has none.

    Raises:
        ValueError: an unreadable, corrupt or non-object file, or a bad ``origins``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            tree = json.load(f)
    except OSError as e:
        raise ValueError(f"--config: cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"--config: {path} is not valid JSON ({_describe(e)}); give a "
                         "run's config.json or a search's best_config.json") from e
    if not isinstance(tree, Mapping):
        raise ValueError(f"--config: {path} holds a JSON {type(tree).__name__}, not an object "
                         "of config branches like a run's config.json")
    origins = tree.get(ORIGINS, {})
    if not isinstance(origins, Mapping):
        raise ValueError(f"--config: {path}: {ORIGINS!r} must be an object, got "
                         f"{reprlib.repr(origins)}")
    given = {k: v for k, v in tree.items() if k != ORIGINS}
    try:
        return ml_collections.ConfigDict(_tuples(given)), dict(origins)
    except (TypeError, ValueError, KeyError) as e:  # e.g. a key ConfigDict cannot hold
        raise ValueError(f"--config: {path}: not a config tree ({_describe(e)})") from e


def code_fields(config: Any) -> dict[str, str]:
    """The fields of ``config`` that name code to import: ``{dotted path: value}``.

    Only ``model.arch`` does: ``package.module:function`` or ``path/file.py:function``
    (``models.registry``); a built-in or registered name (no ``:``) imports nothing.
    """
    model = config.get("model") if hasattr(config, "get") else None
    arch = model.get("arch") if hasattr(model, "get") else None
    return {"model.arch": arch} if isinstance(arch, str) and ":" in arch else {}


def describe_code(code: Mapping[str, str]) -> str:
    """``model.arch='evil.py:build' imports and runs evil.py`` for :func:`code_fields`."""
    return ", ".join(f"{path}={value!r} imports and runs {value.rpartition(':')[0].strip()}"
                     for path, value in code.items())


def _load(path: str) -> Any:
    """Imports the file at ``path`` as a fresh module; any failure is a one-line ValueError."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem + "_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"--config: could not load {path}: SyntaxError at line {e.lineno}: "
                         f"{e.msg}") from e
    except Exception as e:  # a user's file that fails at import (ImportError, NameError, ...)
        raise ValueError(f"--config: {path} raised {_describe(e, ' at import')}") from e
    return module


def _describe(e: BaseException, where: str = "") -> str:
    """``Type{where}: message`` on one line (no ``: message`` when the message is empty)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}{where}: {text}" if text else f"{type(e).__name__}{where}"


def _tuples(value: Any) -> Any:
    """A plain nested dict with lists turned into tuples (tuples are CLI-overridable)."""
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def complete(config: Any) -> ml_collections.ConfigDict:
    """Returns the full tree: ``base.get_config()`` updated with ``config``'s fields.

    Lets Python users pass a partial dict (``{"optimizer": {"learning_rate": 3e-4}}``).

    Raises:
        ValueError: ``config`` is not a ConfigDict, a dict or None; a field that the tree does
            not have or of the wrong type, named with its dotted path; a seed out of range.
    """
    full = base_config.get_config()
    if config is None:
        return full
    if hasattr(config, "to_dict"):  # ConfigDict, FrozenConfigDict
        given = config.to_dict()
    elif isinstance(config, Mapping):
        given = dict(config)
    elif isinstance(config, str):
        raise ValueError(f"config must be a ConfigDict, a dict or None, got the string "
                         f"{config!r}; to load a built-in recipe or a .py file pass "
                         f"recipes.configs.get({config!r})")
    else:
        raise ValueError(f"config must be a ConfigDict, a dict or None, got "
                         f"{type(config).__name__}: {reprlib.repr(config)}")
    given = {k: v for k, v in given.items() if k != ORIGINS}
    _merge(full, given, "")
    _check_seeds(full)
    return full


#: The key under which a run's ``config.json`` says what came from the user's model and what
#: from the config; informational, and skipped when the file is read back as a config.
ORIGINS = "origins"


def given_paths(config: Any) -> set[str]:
    """The dotted paths of the leaves ``config`` sets (all of them for a ConfigDict tree).

    ``recipes.prepare`` keeps what the user's compiled model says for every field the
    config does not name: ``{"optimizer": {"learning_rate": 3e-4}}`` names one field.
    """
    if config is None or isinstance(config, str):
        return set()
    tree = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(tree, Mapping):
        return set()
    paths: set[str] = set()

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping) and key not in FREE_FORM:
                walk(value, f"{prefix}{key}.")
            else:
                paths.add(f"{prefix}{key}")

    walk({k: v for k, v in tree.items() if k != ORIGINS}, "")
    return paths


def _check_seeds(cfg: ml_collections.ConfigDict) -> None:
    """Every ``BRANCH.seed`` seeds NumPy/TF/scikit-learn, which take [0, 2**32 - 1] only."""
    for branch in cfg.keys():
        node = cfg[branch]
        if not isinstance(node, ml_collections.ConfigDict) or "seed" not in node:
            continue
        seed = node.seed
        if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                or not 0 <= seed <= 2**32 - 1):
            raise ValueError(f"{branch}.seed must be an integer in [0, 2**32 - 1], got "
                             f"{seed!r}; e.g. {branch}.seed=0")


#: Branches whose keys are the user's own (a builder's keyword arguments): taken whole.
FREE_FORM = ("activation_kw", "kwargs")


def _merge(into: ml_collections.ConfigDict, src: Mapping[str, Any], prefix: str) -> None:
    for key, value in src.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in into:
            valid = ", ".join(sorted(into.keys()))
            raise ValueError(f"config: unknown field {path!r}; valid fields here: {valid}")
        if isinstance(into[key], ml_collections.ConfigDict) and key not in FREE_FORM:
            if not isinstance(value, Mapping):
                raise ValueError(f"config: {path} must be a mapping, got {reprlib.repr(value)}")
            _merge(into[key], value, path + ".")
        else:
            try:
                into[key] = tuple(value) if isinstance(value, list) else value
            except TypeError as e:  # ConfigDict is typed: "abc" cannot replace a float
                raise ValueError(f"config: {path} must be of type {type(into[key]).__name__}, "
                                 f"got {reprlib.repr(value)}") from e


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
    fields = base_config.get_config()[branch].to_dict()
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
