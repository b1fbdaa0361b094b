"""The layering rule of docs/architecture.md, read from the code's imports (AST).

A module of ``recipes``, ``models`` or ``tuning`` imports only from its own layer or the
layers below it, never in a circle; imports of the package's own modules sit at the top of
a module (none hidden in a function to dodge a circle); no private name (``_x``) is taken
from another module; and no library function body (its docstring aside) is longer than 80
lines.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("recipes", "models", "tuning")

#: Layer of each module (the longest matching prefix wins). docs/architecture.md draws it.
LAYERS = {
    "recipes.io": 1, "recipes.workdir": 1,
    "recipes.configs": 2, "recipes.cli": 2, "recipes.data": 2, "recipes.preprocessing": 2,
    "recipes.sources": 2, "recipes.readers": 2, "recipes.tasks": 2,
    "recipes.pipeline": 2, "recipes.optimizers": 2, "recipes.schedules": 2,
    "recipes.losses": 2, "recipes.ranges": 2, "recipes.plots": 2, "recipes.tta": 2,
    "recipes.causes": 2,
    "models": 2, "models.registry": 2,
    "recipes.callbacks": 3, "recipes.monitors": 3,
    "recipes.prepare": 4,
    "recipes.train": 5, "recipes.sanity": 5, "recipes.lr_range": 5, "recipes.diagnose": 5,
    "recipes.finetune": 5, "recipes.ensemble": 5, "recipes.distill": 5, "recipes.report": 5,
    "recipes.preflight": 5, "recipes.predict": 5, "recipes.export": 5,
    "recipes": 5,  # the package's __init__: imports every Keras-serializable class
    "recipes.babysit": 6, "recipes.repair": 6, "tuning": 6,
    "recipes.experiments": 7,
}
MAX_FUNCTION_LINES = 80
LONG_ALLOWED = ("recipes/configs/", "recipes/experiments/")  # recipes: long literal trees


def _modules():
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module):
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def _resolve(module, node):
    """The internal modules an import statement names (``from recipes import io`` -> io)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".")
            is_pkg = MODULES[module].name == "__init__.py"
            pkg = pkg[: len(pkg) - node.level + (1 if is_pkg else 0)]
            base = ".".join([*pkg, base] if base else pkg)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            names.append(full if full in MODULES else base)
    return [n for n in names if n.split(".")[0] in PACKAGES and n in MODULES]


def _imports(module):
    """(imported module, line, at top level) for every internal import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    top = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):  # guarded top-level imports
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    top.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _resolve(module, node):
                if target != module:
                    yield target, node.lineno, id(node) in top


GRAPH = {m: sorted({t for t, _, _ in _imports(m)}) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_layer(module):
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    assert prefix != "recipes" or module == "recipes", \
        f"{module}: add it to LAYERS and docs/architecture.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = layer_of(module)
    upward = [f"{t} (layer {layer_of(t)}) at line {line}" for t, line, _ in _imports(module)
              if layer_of(t) > mine and not module.startswith(t + ".")]
    assert not upward, f"{module} (layer {mine}) imports upward: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_internal_import_inside_a_function(module):
    hidden = [f"{t} at line {line}" for t, line, at_top in _imports(module) if not at_top
              and not _in_main_block(module, line)]
    assert not hidden, f"{module} imports inside a function: {hidden}"


def _in_main_block(module, line):
    """An ``if __name__ == "__main__":`` block may import the CLI it runs."""
    tree = ast.parse(MODULES[module].read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return node.lineno <= line <= node.end_lineno
    return False


def test_no_import_circle():
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in GRAPH[m]:
            if m.startswith(t + "."):
                continue  # a package's submodule importing its package's __init__
            if state.get(t) == "open":
                circles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_from_another_module(module):
    tree = ast.parse(MODULES[module].read_text())
    aliases = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for target in _resolve(module, node):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") \
                            and f"{target}.{a.name}" not in MODULES and target != module:
                        found.append(f"from {target} import {a.name} (line {node.lineno})")
                    if f"{target}" == f"{node.module}.{a.name}" or target.endswith(a.name):
                        aliases[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append(f"{aliases[node.value.id]}.{node.attr} (line {node.lineno})")
    assert not found, f"{module} uses private names of other modules: {found}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_stay_short(module):
    path = MODULES[module]
    if str(path.relative_to(ROOT)).startswith(LONG_ALLOWED):
        return
    tree = ast.parse(path.read_text())
    long = [f"{n.name} ({_length(n)} lines, line {n.lineno})" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _length(n) > MAX_FUNCTION_LINES]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _length(fn):
    """Lines of a function, its signature and docstring left out (Args: may list 20)."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_architecture_page_names_every_layered_prefix():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [p for p in LAYERS if p not in ("recipes",) and f"`{p.split('.')[-1]}" not in page]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    # The rule must be able to fail: a layer-2 module importing a layer-5 one is upward.
    assert layer_of("recipes.data") == 2 and layer_of("recipes.train") == 5
    assert layer_of("recipes.callbacks.monitors") == 3 and layer_of("tuning.cli") == 6
    assert os.path.exists(MODULES["recipes.prepare"])
