"""Search spaces keyed by dotted config paths, sampled through ``keras_tuner.HyperParameters``.

CS231n "Training Neural Networks II", hyperparameter optimization: sample at random (not on
a grid), and sample scale parameters such as the learning rate and the regularization
strength in log space ("``lr = 10 ** uniform(-6, -3)``"). A space maps a config path to one
of four distributions; every field of the config tree is searchable without new code.

String syntax (``--space`` on the command line, ``config.search.space``)::

    SPACE  := ENTRY ("," ENTRY)*                 entries separated by commas
    ENTRY  := PATH "=" DIST                      PATH: a dotted config path, model.l2
    DIST   := "log:" LO ":" HI                   log-uniform on [LO, HI], 0 < LO < HI
            | "uniform:" LO ":" HI               uniform on [LO, HI]
            | "int:" LO ":" HI [":log"]          integers in [LO, HI], optionally log-uniform
            | "choice:" V ("|" V)*               one of the listed values
    V      := a value of the field's type: 0.5 | 64 | relu | true | 100-50
              (a tuple field such as model.hidden takes its elements joined by "-":
               "choice:50|100-50" tries (50,) and (100, 50))

Example: ``optimizer.learning_rate=log:1e-6:1e-3,model.l2=log:1e-5:1e5,
model.hidden=choice:50|100-50,optimizer.name=choice:adam|momentum``.

Values are typed by the config field they replace (parsing is checked against the full
config tree), so a misspelt path, a float range on an integer field or a word in a number
field is a ``ValueError`` naming the fragment and the fix.

``model.kwargs.NAME`` (a keyword argument of a user's builder, ``models.register`` or
``model.arch="module:function"``) is searchable although the default tree has no such key:
its type is the config's value when the config sets one (``model.kwargs.width=32``), else
the distribution's: ``int:`` an int, ``log:``/``uniform:`` a float, ``choice:`` its members'
(numbers, words, true/false; set a tuple-valued kwarg in the config first).

Which fields apply to which model: ``check_applicable`` refuses ``model.*`` fields (other
than ``model.kwargs.*``) for a *user model* — an arch other than mlp/convnet/resnet, or a
model object passed from Python — and ``model.kwargs.*`` for the built-ins;
``USER_MODEL_FIELDS`` lists what any model takes (a user model's default space).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import keras_tuner as kt
import ml_collections

import models
from recipes import configs

__all__ = [
    "LogUniform",
    "Uniform",
    "IntUniform",
    "Choice",
    "Dimension",
    "Space",
    "parse",
    "to_string",
    "normalize",
    "declare",
    "apply",
    "decode",
    "describe",
    "field_type",
    "from_mapping",
    "grid_points",
    "edge_values",
    "value_text",
    "check_applicable",
    "applies_to_user_model",
    "USER_MODEL_FIELDS",
]

_KINDS = "log:LO:HI, uniform:LO:HI, int:LO:HI[:log] or choice:A|B|C"
_EXAMPLE = "optimizer.learning_rate=log:1e-6:1e-3,model.l2=log:1e-5:1e5"


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {x!r}")
    return float(x)


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Log-uniform on ``[lo, hi]``: each decade gets the same share of samples."""

    lo: float
    hi: float

    def __post_init__(self):
        lo, hi = _number(self.lo), _number(self.hi)
        if not 0 < lo < hi:
            raise ValueError(f"log:{lo:g}:{hi:g}: a log range needs 0 < LO < HI, e.g. "
                             "log:1e-6:1e-3")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @property
    def log(self) -> bool:
        return True

    def spec(self) -> str:
        return f"log:{self.lo!r}:{self.hi!r}"

    def declare(self, hp: kt.HyperParameters, name: str, points: int | None = None) -> None:
        step = (self.hi / self.lo) ** (1 / (points - 1)) if points and points > 1 else None
        hp.Float(name, self.lo, self.hi, step=step, sampling="log")


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform on ``[lo, hi]`` (for parameters that are not scales: dropout, momentum)."""

    lo: float
    hi: float

    def __post_init__(self):
        lo, hi = _number(self.lo), _number(self.hi)
        if not lo < hi:
            raise ValueError(f"uniform:{lo:g}:{hi:g}: needs LO < HI, e.g. uniform:0:0.5")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @property
    def log(self) -> bool:
        return False

    def spec(self) -> str:
        return f"uniform:{self.lo!r}:{self.hi!r}"

    def declare(self, hp: kt.HyperParameters, name: str, points: int | None = None) -> None:
        step = (self.hi - self.lo) / (points - 1) if points and points > 1 else None
        hp.Float(name, self.lo, self.hi, step=step)


@dataclasses.dataclass(frozen=True)
class IntUniform:
    """Integers in ``[lo, hi]``, uniform or (``log=True``) log-uniform (batch sizes, widths)."""

    lo: int
    hi: int
    log: bool = False

    def __post_init__(self):
        for v in (self.lo, self.hi):
            if isinstance(v, bool) or not float(_number(v)).is_integer():
                raise ValueError(f"int:{self.lo}:{self.hi}: bounds must be integers")
        lo, hi = int(self.lo), int(self.hi)
        if not lo < hi:
            raise ValueError(f"int:{lo}:{hi}: needs LO < HI, e.g. int:32:256")
        if self.log and lo < 1:
            raise ValueError(f"int:{lo}:{hi}:log: a log range needs LO >= 1")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "log", bool(self.log))

    def spec(self) -> str:
        return f"int:{self.lo}:{self.hi}" + (":log" if self.log else "")

    def declare(self, hp: kt.HyperParameters, name: str, points: int | None = None) -> None:
        step = None
        if points and points > 1:
            if self.log:
                step = max((self.hi / self.lo) ** (1 / (points - 1)), 1.0 + 1e-9)
            else:
                step = max(1, (self.hi - self.lo) // (points - 1))
        hp.Int(name, self.lo, self.hi, step=step, sampling="log" if self.log else "linear")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values`` (names, sizes, tuples such as hidden layer sizes)."""

    values: tuple

    def __post_init__(self):
        values = tuple(tuple(v) if isinstance(v, list) else v for v in self.values)
        if not values:
            raise ValueError("choice: give at least one value, e.g. choice:relu|tanh")
        if len(set(values)) != len(values):
            raise ValueError(f"choice:{'|'.join(map(_text, values))}: a value is repeated")
        object.__setattr__(self, "values", values)

    @property
    def log(self) -> bool:
        return False

    def spec(self) -> str:
        return "choice:" + "|".join(_text(v) for v in self.values)

    def declare(self, hp: kt.HyperParameters, name: str, points: int | None = None) -> None:
        del points  # a grid takes every value
        hp.Choice(name, [_encode(v) for v in self.values])


Dimension = LogUniform | Uniform | IntUniform | Choice
Space = dict[str, Dimension]
NUMERIC = (LogUniform, Uniform, IntUniform)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "-".join(_text(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _encode(v: Any) -> Any:
    """A value as KerasTuner stores it: tuples as ``"100-50"``, booleans as ``"true"``.

    (KerasTuner's ``Choice`` holds one scalar type and turns booleans into integers.)
    """
    return _text(v) if isinstance(v, (tuple, bool)) else v


# -- the config tree's fields ---------------------------------------------------------------

KWARGS = "model.kwargs."  # a user's builder's keyword arguments: model.kwargs.NAME


def field_type(config: ml_collections.ConfigDict, path: str,
               dim: Dimension | None = None) -> type:
    """Returns the type of the field at dotted ``path`` (placeholders included).

    Args:
        config: the full config tree.
        path: a dotted path, e.g. ``model.l2``.
        dim: the distribution searched over ``path``; it types a ``model.kwargs.NAME`` that
            the config does not set (see ``kwarg_type``).

    Raises:
        ValueError: ``path`` is not a field of the tree, naming the valid fields there.
    """
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ValueError(f"{path!r} is not a dotted config path; write e.g. "
                         "optimizer.learning_rate or model.l2")
    if _new_kwarg(config, path):
        if dim is None:
            raise ValueError(f"{path} is not set in the config, so its type comes from the "
                             f"distribution searched over it; or set {path}=VALUE")
        return kwarg_type(path, dim)
    node = config
    for i, key in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            where = ".".join(parts[:i]) or "the top level"
            valid = ", ".join(sorted(node.keys())) if isinstance(
                node, ml_collections.ConfigDict) else "(none: not a branch)"
            raise ValueError(f"unknown config path {path!r}: no field {key!r} in {where}; "
                             f"valid fields there: {valid}")
        if i == len(parts) - 1:
            kind = node.get_type(key)
            if kind is ml_collections.ConfigDict or isinstance(node[key],
                                                                ml_collections.ConfigDict):
                first = sorted(node[key].keys())[0] if node[key].keys() else "width"
                raise ValueError(f"{path!r} is a branch of the config, not a field; name one "
                                 f"of its fields, e.g. {path}.{first}")
            return kind
        node = node[key]
    raise AssertionError("unreachable")


def _new_kwarg(config: ml_collections.ConfigDict, path: str) -> bool:
    """Whether ``path`` is ``model.kwargs.NAME`` for a NAME the config does not set.

    Raises:
        ValueError: ``model.kwargs.A.B`` or a NAME that is no keyword argument name.
    """
    if not path.startswith(KWARGS):
        return False
    name = path[len(KWARGS):]
    if "model" not in config or "kwargs" not in config.model:
        return False  # not the config tree: field_type names what is missing
    kwargs = config.model.kwargs
    if "." in name and isinstance(kwargs, ml_collections.ConfigDict) \
            and name.split(".")[0] in kwargs:
        return False  # a nested value the user set: an ordinary field of the tree
    if not name.isidentifier():
        raise ValueError(f"{path}: model.kwargs.NAME takes one keyword argument name of your "
                         "builder, e.g. model.kwargs.width")
    return not isinstance(kwargs, ml_collections.ConfigDict) or name not in kwargs


def kwarg_type(path: str, dim: Dimension) -> type:
    """The type of a ``model.kwargs.NAME`` the config does not set, from its distribution.

    ``int:`` gives int, ``log:``/``uniform:`` float, ``choice:`` its members' type (ints
    and floats together: float).

    Raises:
        ValueError: choice members of different types, or tuples (set the kwarg in the
            config first, so the search knows its type).
    """
    if isinstance(dim, IntUniform):
        return int
    if isinstance(dim, (LogUniform, Uniform)):
        return float
    kinds = {type(v) for v in dim.values}
    if kinds <= {int, float}:
        return float if float in kinds else int
    if len(kinds) == 1 and kinds <= {bool, str}:
        (kind,) = kinds
        if kind is str and any(v.strip().lower() in ("true", "false") for v in dim.values):
            raise ValueError(f"{path}={dim.spec()}: true/false among words is ambiguous; "
                             "use true|false alone or other words")
        return kind
    if tuple in kinds or list in kinds:
        raise ValueError(f"{path}={dim.spec()}: a tuple-valued model.kwargs needs its type "
                         f"from the config: set {path}=(...) there first")
    names = ", ".join(sorted(k.__name__ for k in kinds))
    raise ValueError(f"{path}={dim.spec()}: the choices mix types ({names}); {path} is not "
                     "in the config, so its values must share one type")


def _loose(text: str) -> Any:
    """A value for a ``model.kwargs.NAME`` of no known type: bool, int, float or the word."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            v = kind(text)
        except ValueError:
            continue
        if kind is int or math.isfinite(v):
            return v
    return text


def _default(config: ml_collections.ConfigDict, path: str) -> Any:
    if _new_kwarg(config, path):
        return None
    node: Any = config
    for key in path.split("."):
        node = node[key]
    return node


def _value(text: str, kind: type, path: str, default: Any) -> Any:
    """Parses one value for a field of type ``kind``."""
    text = text.strip()
    if not text:
        raise ValueError(f"{path}: an empty value; list the values as choice:A|B|C")
    try:
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if kind is int:
            f = float(text)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if kind is float:
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
        if kind in (tuple, list):
            elem = type(default[0]) if default else int
            return tuple(_value(t, elem, path, None) for t in text.split("-"))
    except ValueError:
        hint = {bool: "true or false", int: "an integer", float: "a number",
                tuple: "integers joined by '-', e.g. 100-50",
                list: "integers joined by '-', e.g. 100-50"}.get(kind, str(kind.__name__))
        raise ValueError(f"{path}: {text!r} is not {hint} (the field is "
                         f"{kind.__name__})") from None
    return text


def _coerce(value: Any, kind: type, path: str, default: Any) -> Any:
    """Converts a programmatic choice value to the field's type (lists/tuples, ints → float)."""
    if isinstance(value, str) and kind is not str:
        return _value(value, kind, path, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (tuple, list) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    if kind in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value)
    ok = {float: (float,), int: (int,), bool: (bool,), str: (str,)}.get(kind)
    if ok is not None and (not isinstance(value, ok) or (kind is int and isinstance(value, bool))):
        raise ValueError(f"{path}: choice value {value!r} is not a {kind.__name__}")
    return value


def normalize(space: Mapping[str, Dimension], config: Any = None) -> Space:
    """Checks ``space`` against the config tree and types its values like the fields.

    Args:
        space: path → distribution.
        config: the tree the paths refer to (None: the default tree).

    Returns:
        A new space whose choice values have the fields' types.

    Raises:
        ValueError: an unknown path, or a distribution that does not fit the field's type.
    """
    cfg = configs.complete(config) if not isinstance(config, ml_collections.ConfigDict) \
        else config
    out: Space = {}
    for path, dim in space.items():
        if not isinstance(dim, (LogUniform, Uniform, IntUniform, Choice)):
            field_type(cfg, path, LogUniform(1, 2))  # an unknown path is the first problem
            raise ValueError(f"{path}: {dim!r} is not a distribution; use LogUniform, "
                             "Uniform, IntUniform or Choice")
        kind = field_type(cfg, path, dim)
        if isinstance(dim, (LogUniform, Uniform)) and kind is not float:
            fix = ("int:LO:HI (add :log for a log range)" if kind is int
                   else "choice:A|B|C")
            raise ValueError(f"{path}={dim.spec()}: {path} is a field of type "
                             f"{kind.__name__}; use {fix}")
        if isinstance(dim, IntUniform) and kind not in (int, float):
            raise ValueError(f"{path}={dim.spec()}: {path} is a field of type "
                             f"{kind.__name__}; use choice:A|B|C")
        if isinstance(dim, Choice):
            default = _default(cfg, path)
            dim = Choice(tuple(_coerce(v, kind, path, default) for v in dim.values))
        out[path] = dim
    return out


# -- text --------------------------------------------------------------------------------

def parse(text: str, config: Any = None) -> Space:
    """Parses ``"path=dist,path=dist"`` (see the module docstring for the syntax).

    Args:
        text: the space, e.g. ``"optimizer.learning_rate=log:1e-6:1e-3,model.l2=log:1e-5:1e5"``.
        config: the tree the paths refer to (None: the default tree).

    Returns:
        path → distribution, in the order written.

    Raises:
        ValueError: naming the malformed fragment and how to write it.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty search space; write e.g. --space={_EXAMPLE}")
    cfg = configs.complete(config) if not isinstance(config, ml_collections.ConfigDict) \
        else config
    space: Space = {}
    for fragment in text.split(","):
        frag = fragment.strip()
        if not frag:
            raise ValueError(f"search space {text!r}: an empty entry (a stray comma?); "
                             f"write PATH=DIST entries separated by commas, e.g. {_EXAMPLE}")
        path, eq, dist = (s.strip() for s in frag.partition("="))
        if not eq or not path or not dist:
            raise ValueError(f"search space entry {frag!r}: expected PATH=DIST, e.g. "
                             "optimizer.learning_rate=log:1e-6:1e-3")
        if path in space:
            raise ValueError(f"search space entry {frag!r}: {path} is given twice; keep one")
        try:
            if _new_kwarg(cfg, path):  # no field to type it: the distribution types it
                space[path] = _dimension(dist, None, path, None)
            else:
                space[path] = _dimension(dist, field_type(cfg, path), path,
                                         _default(cfg, path))
        except ValueError as e:
            raise ValueError(f"search space entry {frag!r}: {e}") from None
    return normalize(space, cfg)


def _dimension(dist: str, kind: type | None, path: str, default: Any) -> Dimension:
    """One distribution; ``kind`` None: choice values typed by their text (``_loose``)."""
    name, _, rest = dist.partition(":")
    name = name.strip().lower()
    args = [a.strip() for a in rest.split(":")] if rest else []
    if name == "choice":
        if not rest.strip():
            raise ValueError("choice needs values: choice:A|B|C")
        if kind is None:
            return Choice(tuple(_loose(v) if v.strip() else _value(v, str, path, None)
                                for v in rest.split("|")))
        return Choice(tuple(_value(v, kind, path, default) for v in rest.split("|")))
    if name not in ("log", "uniform", "int"):
        raise ValueError(f"unknown distribution {name!r}; use {_KINDS}")
    log = False
    if name == "int" and len(args) == 3:
        if args[2].lower() != "log":
            raise ValueError(f"int:{rest}: the third part may only be 'log' (int:LO:HI:log)")
        args, log = args[:2], True
    if len(args) != 2:
        raise ValueError(f"{name}:{rest}: expected {name}:LO:HI" +
                         (" or int:LO:HI:log" if name == "int" else ""))
    try:
        lo, hi = float(args[0]), float(args[1])
    except ValueError:
        raise ValueError(f"{name}:{rest}: LO and HI must be numbers, e.g. "
                         f"{name}:{'1e-6:1e-3' if name == 'log' else '0:1'}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}:{rest}: LO and HI must be finite numbers")
    if name == "log":
        return LogUniform(lo, hi)
    if name == "uniform":
        return Uniform(lo, hi)
    return IntUniform(lo, hi, log)


def edge_values(space: Mapping[str, Dimension]) -> list[tuple[str, Any]]:
    """``(path, value)`` for every choice member and both ends of every range.

    A config that takes each of these is checked before a search starts; values inside a
    range are of the same type and between checked ends.
    """
    out: list[tuple[str, Any]] = []
    for path, dim in space.items():
        if isinstance(dim, Choice):
            out += [(path, v) for v in dim.values]
        else:
            out += [(path, dim.lo), (path, dim.hi)]
    return out


def value_text(value: Any) -> str:
    """A value as the space string writes it (``100-50`` for a tuple, ``true``)."""
    return _text(value)


def to_string(space: Mapping[str, Dimension]) -> str:
    """The inverse of :func:`parse`: ``parse(to_string(s)) == s``."""
    return ",".join(f"{path}={dim.spec()}" for path, dim in space.items())


# -- KerasTuner and the config --------------------------------------------------------------

def grid_points(space: Mapping[str, Dimension], trials: int) -> int:
    """Points per numeric range so that the full grid fits in ``trials`` (at least 2)."""
    n_numeric = sum(isinstance(d, NUMERIC) for d in space.values())
    n_choices = math.prod(len(d.values) for d in space.values() if isinstance(d, Choice))
    if not n_numeric:
        return 0
    per = (max(trials, 1) / n_choices) ** (1 / n_numeric)
    return max(2, int(per + 1e-9))


def declare(space: Mapping[str, Dimension], hp: kt.HyperParameters, *,
            points: int | None = None) -> kt.HyperParameters:
    """Registers every dimension on ``hp`` under its config path (``sampling="log"`` for logs).

    Args:
        space: path → distribution.
        hp: the KerasTuner hyperparameters to add to.
        points: for a grid: values per numeric range (None: continuous, for random search).

    Returns:
        ``hp``.
    """
    for path, dim in space.items():
        dim.declare(hp, path, points)
    return hp


def apply(config: Any, values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Returns a copy of the full config tree with ``values`` (path → value) set.

    Tuple fields take either a tuple or its text (``"100-50"``, as KerasTuner stores it).

    Raises:
        ValueError: an unknown path or a value the field's type cannot take.
    """
    cfg = configs.complete(config).copy_and_resolve_references()
    for path, value in values.items():
        parts = path.split(".")
        if _new_kwarg(cfg, path):  # a key the tree does not have yet: the value's type
            with cfg.unlocked():
                cfg.model.kwargs[parts[-1]] = _kwarg_value(value)
            continue
        kind = field_type(cfg, path)
        node = cfg
        for key in parts[:-1]:
            node = node[key]
        value = _coerce(value, kind, path, node[parts[-1]])
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ValueError(f"{path}: cannot take {value!r} ({e})") from None
    return cfg


def decode(values: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """KerasTuner's values with tuple fields turned back into tuples (for reports)."""
    cfg = configs.complete(config) if not isinstance(config, ml_collections.ConfigDict) \
        else config
    out = {}
    for path, value in values.items():
        if _new_kwarg(cfg, path):
            out[path] = _kwarg_value(value)
            continue
        kind = field_type(cfg, path)
        out[path] = _coerce(value, kind, path, _default(cfg, path))
    return out


def _kwarg_value(value: Any) -> Any:
    """A sampled value of an untyped kwarg: KerasTuner keeps booleans as "true"/"false"."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return tuple(value) if isinstance(value, list) else value


def describe(space: Mapping[str, Dimension]) -> dict[str, dict[str, Any]]:
    """Each range as ``{"kind", "lo", "hi", "log"}`` or ``{"kind", "values"}`` (for JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for path, dim in space.items():
        if isinstance(dim, Choice):
            out[path] = {"kind": "choice", "values": [_encode(v) for v in dim.values]}
        else:
            kind = {LogUniform: "log", Uniform: "uniform", IntUniform: "int"}[type(dim)]
            out[path] = {"kind": kind, "lo": dim.lo, "hi": dim.hi, "log": dim.log}
    return out


def from_mapping(space: Mapping[str, Any] | str | None, config: Any = None) -> Space:
    """Accepts a space as text, a mapping of distributions, or None (the config's own).

    Raises:
        ValueError: as :func:`parse` and :func:`normalize`.
    """
    cfg = configs.complete(config) if not isinstance(config, ml_collections.ConfigDict) \
        else config
    if space is None:
        space = cfg.search.space
    if isinstance(space, str):
        return parse(space, cfg)
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"search space must be a non-empty mapping or a string like "
                         f"{_EXAMPLE!r}, got {space!r}")
    return normalize(space, cfg)


# -- which fields apply to which model ------------------------------------------------------

#: The config paths that configure training around any model, the user's included (a
#: ``.*`` entry covers a whole branch): a user model's search space draws from these.
USER_MODEL_FIELDS = ("optimizer.*", "schedule.*", "train.batch_size", "loss.label_smoothing",
                     "augment.*", "model.kwargs.*")

#: model.* fields that are regularization (the message points at the builder for them).
_REGULARIZATION = ("model.l1", "model.l2", "model.dropout", "model.max_norm")


def applies_to_user_model(path: str) -> bool:
    """Whether the config path ``path`` takes effect on any model (``USER_MODEL_FIELDS``)."""
    return any(path == f or (f.endswith(".*") and path.startswith(f[:-1]))
               for f in USER_MODEL_FIELDS)


def check_applicable(space: Mapping[str, Any] | str, *, user_model: bool,
                     arch: str | None = None) -> None:
    """Refuses a space whose fields the model being searched would ignore.

    A *user model* is one babysit did not build from its own architectures: a
    ``model.arch`` other than mlp, convnet and resnet (a ``models.register`` name,
    ``"module:function"`` or ``"file.py:function"``: ``models.is_user_arch``), or a model
    object passed from Python. Its builder reads ``model.kwargs.*`` and nothing else under
    ``model.*``; the built-ins read every ``model.*`` field but ``model.kwargs``.

    Args:
        space: path → distribution (or the space's text).
        user_model: whether the model is a user model (see above).
        arch: ``model.arch``, for the message; with ``user_model`` and a built-in name it
            means a model object passed from Python, which takes no ``model.kwargs`` either.

    Raises:
        ValueError: naming the first field that does not apply, the reason and the fix.
    """
    paths = ([f.partition("=")[0].strip() for f in space.split(",")]
             if isinstance(space, str) else list(space))
    builtin = arch is not None and not models.is_user_arch(arch)
    for path in paths:
        if not path.startswith("model."):
            continue
        kwarg = path.startswith(KWARGS)
        if user_model and not kwarg:
            what = "regularization" if path in _REGULARIZATION else "it"
            yours = (f"your model (arch={arch}) takes model.kwargs.* — or set {what} in your "
                     "builder" if arch and not builtin else
                     f"a model passed from Python is trained as it is — set {what} in the "
                     f"model; search {', '.join(USER_MODEL_FIELDS[:-1])}" if builtin else
                     f"your model takes model.kwargs.* — or set {what} in your builder")
            raise ValueError(f"search space: {path} configures the built-in architectures "
                             f"(mlp, convnet, resnet); {yours}")
        if user_model and kwarg and builtin:
            raise ValueError(f"search space: {path} is a keyword argument of a builder, but "
                             "the model was passed from Python and is cloned as it is; "
                             "search it with model.arch='module:function' (or a registered "
                             "name) instead")
        if not user_model and kwarg:
            them = f"the built-in {arch} takes" if arch else "the built-in architectures take"
            raise ValueError(f"search space: {path} is a keyword argument for a user's "
                             f"builder (model.arch='module:function' or a registered name); "
                             f"{them} model.* fields such as model.hidden, model.widths, "
                             "model.l2 — search those instead")
