"""The user's own networks by name: ``register`` and ``model.arch="module:function"``.

A builder is any callable ``fn(cfg, input_shape, num_classes, **kwargs) -> keras.Model``,
where ``cfg`` is the complete ``model`` branch as a plain dict (the built-ins get the same)
and ``kwargs`` is ``model.kwargs``. ``model.arch`` names it in one of three ways:

    "tiny_cnn"                     registered with ``@models.register("tiny_cnn")``
                                   (timm's ``register_model`` decorator, by name)
    "package.module:function"      imported with ``importlib.import_module``; the current
                                   directory is searched too (appended to ``sys.path`` for
                                   the import only), as ``python -m`` does
    "path/to/file.py:function"     loaded with ``importlib.util.spec_from_file_location``;
                                   a relative path is taken from the current directory

Every failure — no such module, file or function, an import or a builder that raises, an
unexpected keyword argument, a builder that returns no ``keras.Model`` — is a one-line
``ValueError`` that names ``model.arch`` and the fix (the CLI prints it and exits 2).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

__all__ = ["BUILTIN", "register", "unregister", "registered", "is_user_arch", "resolve",
           "call_builder"]

#: The built-in architectures (models.mlp, models.convnet, models.resnet); their names are
#: reserved. Every other ``model.arch`` is a *user model*.
BUILTIN = ("mlp", "convnet", "resnet")

Builder = Callable[..., Any]
_REGISTRY: dict[str, Builder] = {}
_FILES: dict[tuple[str, int], Any] = {}  # (absolute path, mtime) -> the loaded module


def register(name: str, fn: Builder | None = None) -> Any:
    """Registers a builder under ``name`` so that ``model.arch=name`` builds it.

    Like timm's ``register_model``: use it as ``@models.register("tiny_cnn")`` above
    ``def build(cfg, input_shape, num_classes, **kwargs) -> keras.Model``, or call
    ``models.register("tiny_cnn", build)``.

    Registering the same function again is a no-op, and so is a function of the same module
    and qualified name (a notebook cell run twice): the newer definition replaces the older.

    Args:
        name: the architecture's name; not a built-in one, no ``:``.
        fn: the builder (None: return a decorator).

    Returns:
        ``fn`` (or the decorator, which returns the function it decorates).

    Raises:
        ValueError: a built-in name, a malformed name, a callable that is not one, or a
            name already registered to a different function.
    """
    key = _check_name(name)

    def decorator(f: Builder) -> Builder:
        if not callable(f):
            raise ValueError(f"models.register({name!r}) needs a function, got "
                             f"{type(f).__name__}")
        old = _REGISTRY.get(key)
        if old is not None and old is not f and _identity(old) != _identity(f):
            raise ValueError(f"models.register: {name!r} is already registered to "
                             f"{_qualname(old)}; pick another name or call "
                             f"models.unregister({name!r}) first")
        _REGISTRY[key] = f
        return f

    return decorator if fn is None else decorator(fn)


def unregister(name: str) -> None:
    """Removes a registered name (tests, notebooks); an unknown name is a no-op."""
    _REGISTRY.pop(str(name).strip(), None)


def registered() -> list[str]:
    """The registered names, in the order they were registered."""
    return list(_REGISTRY)


def is_user_arch(arch: Any) -> bool:
    """Whether ``model.arch`` names a user model (anything but mlp, convnet and resnet).

    A model object passed from Python is a user model too; its config's arch says nothing.
    """
    return str(arch).strip().lower() not in BUILTIN


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"models.register: the name must be a non-empty string, got {name!r}")
    key = name.strip()
    if key.lower() in BUILTIN:
        raise ValueError(f"models.register: {name!r} is a built-in architecture "
                         f"({', '.join(BUILTIN)}); pick another name")
    if ":" in key:
        raise ValueError(f"models.register: {name!r} holds ':', which model.arch reserves for "
                         "'module:function'; pick a name without it")
    return key


def _identity(f: Builder) -> tuple[str, str]:
    return getattr(f, "__module__", ""), getattr(f, "__qualname__", repr(f))


def _qualname(f: Builder) -> str:
    module, name = _identity(f)
    return f"{module}.{name}" if module else name


# -- "module:function" and "file.py:function" ----------------------------------------------

def resolve(arch: str) -> Builder | None:
    """The builder a user's ``model.arch`` names: registered, ``module:fn`` or ``file.py:fn``.

    Returns:
        The builder, or None when ``arch`` is neither registered nor holds a ``:``.

    Raises:
        ValueError: the module, file or function cannot be found or the import raised.
    """
    if arch in _REGISTRY:
        return _REGISTRY[arch]
    if ":" not in arch:
        return None
    where, _, name = arch.rpartition(":")
    where, name = where.strip(), name.strip()
    if not where or not name:
        raise ValueError(f"model.arch={arch!r}: write 'package.module:function' or "
                         "'path/to/file.py:function'")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    module = _load_file(arch, where) if is_file else _load_module(arch, where)
    fn = getattr(module, name, None)
    if not callable(fn):
        found = _callables(module)
        listed = ", ".join(found) if found else "none"
        raise ValueError(f"model.arch={arch!r}: {where} has no function {name!r}; its "
                         f"functions: {listed}")
    return fn


def _load_module(arch: str, name: str) -> Any:
    """``importlib.import_module(name)``, the current directory searched last."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:  # python -m puts the current directory first; a script or notebook may not
        sys.path.append(cwd)
    try:
        importlib.invalidate_caches()  # a module written since start-up (a notebook's)
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ValueError(f"model.arch={arch!r}: no module named {e.name!r} (searched "
                             f"sys.path and {cwd}); give 'package.module:function' importable "
                             "from here or 'path/to/file.py:function'") from None
        raise ValueError(f"model.arch={arch!r}: importing {name} raised "
                         f"{_describe(e)}") from e
    except Exception as e:  # noqa: BLE001 - anything a user's module raises at import
        raise ValueError(f"model.arch={arch!r}: importing {name} raised {_describe(e)}") from e
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _load_file(arch: str, path: str) -> Any:
    """Loads a ``.py`` file as a module (cached until the file changes)."""
    full = os.path.abspath(path)
    if not path.endswith(".py"):
        raise ValueError(f"model.arch={arch!r}: {path!r} is not a .py file; give "
                         "'path/to/file.py:function' or 'package.module:function'")
    if not os.path.isfile(full):
        raise ValueError(f"model.arch={arch!r}: file {path!r} does not exist (looked in "
                         f"{os.path.dirname(full)}); a relative path starts at the current "
                         "directory")
    key = (full, os.stat(full).st_mtime_ns)
    if key in _FILES:
        return _FILES[key]
    # A unique module name, registered in sys.modules while it runs: dataclasses and
    # pickling look a class's module up there.
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    name = f"babysit_user_model_{os.path.splitext(os.path.basename(full))[0]}_{digest}"
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ValueError(f"model.arch={arch!r}: could not load {path}: SyntaxError at line "
                         f"{e.lineno}: {e.msg}") from e
    except Exception as e:  # noqa: BLE001 - anything a user's file raises at import
        sys.modules.pop(name, None)
        raise ValueError(f"model.arch={arch!r}: {path} raised {_describe(e, ' at import')}"
                         ) from e
    _FILES[key] = module
    return module


def _callables(module: Any) -> list[str]:
    """Public functions and classes defined in ``module`` (imported ones left out)."""
    own = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
           and getattr(v, "__module__", None) == module.__name__]
    return sorted(own)[:20]


def _describe(e: BaseException, where: str = "") -> str:
    """``Type{where}: message`` on one line (no ``: message`` when the message is empty)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}{where}: {text}" if text else f"{type(e).__name__}{where}"


# -- calling a builder -------------------------------------------------------------------

def call_builder(fn: Builder, arch: str, cfg: Mapping, input_shape: Sequence[int],
                 num_classes: int, kwargs: Mapping[str, Any], *,
                 label: str | None = None) -> keras.Model:
    """``fn(cfg, input_shape, num_classes, **kwargs)``, checked; its model as it returned it.

    A function that cannot take those three but takes no arguments at all (``make()``, a
    ``lambda: model``) is called as ``fn()``. A model the builder compiled stays compiled.

    Args:
        fn: the builder.
        arch: its ``model.arch`` (for the messages).
        cfg: the model branch, passed as a plain dict.
        input_shape: one example's shape.
        num_classes: C.
        kwargs: ``model.kwargs``.
        label: what the messages name instead of ``model.arch=ARCH`` (e.g. ``model=make``
            for a function given from Python).

    Raises:
        ValueError: a keyword argument the builder does not take (naming it and the
            signature), the builder raising (type and message), or a result that is not a
            ``keras.Model``; each names ``model.arch`` (or ``label``).
    """
    what = label or f"model.arch={arch!r}"
    args = (dict(cfg), tuple(input_shape), int(num_classes))
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            if kwargs or not _binds_nothing(signature):
                raise ValueError(f"{what}: {_bind_problem(e, kwargs)}; "
                                 f"{_qualname(fn)}{signature} (builders take "
                                 "(cfg, input_shape, num_classes, **model.kwargs))") from None
            args = ()
    try:
        model = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a user's builder: one line, not a traceback
        raise ValueError(f"{what}: the builder {_qualname(fn)} raised {_describe(e)}") from e
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what}: {_qualname(fn)} returned a "
                         f"{type(model).__name__}; a builder must return a keras.Model")
    return model


def _binds_nothing(signature: inspect.Signature) -> bool:
    """Whether a function can be called with no arguments."""
    try:
        signature.bind()
    except TypeError:
        return False
    return True


def _bind_problem(e: TypeError, kwargs: Mapping[str, Any]) -> str:
    """Which ``model.kwargs`` entry the signature refused (or what else did not fit)."""
    text = " ".join(str(e).split())
    for key in kwargs:
        if repr(key) in text or f"'{key}'" in text:
            return f"the builder takes no keyword argument {key!r} (model.kwargs.{key})"
    return f"the builder cannot be called with model.kwargs={dict(kwargs)!r}: {text}"
