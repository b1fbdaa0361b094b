"""No code path of the package runs code hidden in a data or model file.

Scans the source of ``recipes/``, ``models/`` and ``tuning/`` (the syntax tree, so that
docstrings and comments that *mention* ``pickle.load`` do not count) for loaders that
execute what a file says: ``pickle.load(s)``, ``np.load`` without ``allow_pickle=False``,
``allow_pickle=True``, ``safe_mode=False``, ``yaml.load``, ``marshal.load(s)``, and
``pickle.Unpickler`` subclasses other than the restricted one in ``recipes/data.py``.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("recipes", "models", "tuning")

#: (file, class) of the one allowed Unpickler subclass: it resolves only numpy arrays.
ALLOWED_UNPICKLERS = {("recipes/data.py", "_ArrayUnpickler")}

BANNED_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("cPickle", "loads"),
    ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("marshal", "load"),
    ("marshal", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"), ("torch", "load"),
}
NUMPY = ("np", "numpy")


def _sources():
    for package in PACKAGES:
        for base, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    yield os.path.relpath(path, ROOT), path


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return "missing"


def findings(rel, source):
    """``["file:line: what"]`` for every unsafe loader in one file's source."""
    out = []
    for node in ast.walk(ast.parse(source, rel)):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if _dotted(base)[-1:] == ("Unpickler",) and \
                        (rel, node.name) not in ALLOWED_UNPICKLERS:
                    out.append(f"{rel}:{node.lineno}: Unpickler subclass {node.name} "
                               "(only data._ArrayUnpickler is allowed)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{rel}:{node.lineno}"
        if name[-2:] in BANNED_CALLS:
            out.append(f"{where}: {'.'.join(name)}( runs code from the file")
        if len(name) == 2 and name[0] in NUMPY and name[1] == "load" and \
                _keyword(node, "allow_pickle") is not False:
            out.append(f"{where}: np.load( without allow_pickle=False")
        if _keyword(node, "allow_pickle") is True:
            out.append(f"{where}: allow_pickle=True")
        if _keyword(node, "safe_mode") is False:
            out.append(f"{where}: safe_mode=False")
    return out


def test_package_source_has_no_unsafe_loader():
    problems = []
    count = 0
    for rel, path in _sources():
        count += 1
        with open(path, encoding="utf-8") as f:
            problems += findings(rel, f.read())
    assert count > 20  # the walk found the package
    assert not problems, "unsafe loaders:\n" + "\n".join(problems)


def test_the_scanner_catches_each_pattern():
    bad = '''
import pickle, numpy as np, yaml, keras
class Evil(pickle.Unpickler): pass
pickle.load(f)
pickle.loads(b)
np.load(p)
np.load(p, allow_pickle=True)
yaml.load(s)
keras.saving.load_model(p, safe_mode=False)
"""pickle.load( in a docstring is fine"""
np.load(p, allow_pickle=False)
'''
    found = findings("x.py", bad)
    assert [f.split(":")[1] for f in found] == ["3", "4", "5", "6", "7", "7", "8", "9"], found


def test_the_allowed_unpickler_is_still_there():
    with open(os.path.join(ROOT, "recipes", "data.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    assert "_ArrayUnpickler" in names  # else update ALLOWED_UNPICKLERS
