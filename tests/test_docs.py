"""Every ```python block of docs/*.md and README.md runs; every command in a ```bash block names
a real module, a real built-in config and real config fields."""

import functools
import importlib.util
import os
import re

import pytest

from recipes import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(["README.md"] + [os.path.join("docs", f) for f in
                                os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")])
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(page, lang):
    """``(line number, code)`` of each fenced block of ``lang`` in ``page``, in order."""
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    return [(text.count("\n", 0, m.start()) + 2, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) == lang]


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]


def test_the_guide_pages_exist_and_hold_examples():
    for page in ("index", "data", "models", "training", "babysitting", "search", "test_time",
                 "distributed"):
        assert os.path.join("docs", f"{page}.md") in PAGES, page
    assert len(PYTHON_PAGES) >= 8, PYTHON_PAGES



def test_the_index_links_every_page():
    index = open(os.path.join(ROOT, "docs", "index.md"), encoding="utf-8").read()
    pages = sorted(f for f in os.listdir(os.path.join(ROOT, "docs"))
                   if f.endswith(".md") and f != "index.md")
    assert [p for p in pages if f"({p}" not in index and f"/{p}" not in index] == []

@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """The page's blocks run in order in one namespace, in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, code in blocks(page, "python"):
        # the filename names the page and the block's first line in any traceback
        exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102


def commands(page):
    """The shell commands of the page's ```bash blocks, continuation lines joined."""
    out = []
    for _, code in blocks(page, "bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


BASH = [(p, c) for p in PAGES for c in commands(p)]


@functools.cache
def base_paths():
    def walk(node, prefix):
        for key in node.keys():
            value = node[key]
            path = prefix + key
            yield path
            if hasattr(value, "keys"):
                yield from walk(value, path + ".")

    return frozenset(walk(configs.get("base"), ""))


def test_bash_blocks_were_found():
    assert len(BASH) >= 20
    assert any("--config." in c for _, c in BASH)


@pytest.mark.parametrize("page,command", BASH,
                         ids=[f"{p}:{c.split(' --')[0][:40]}" for p, c in BASH])
def test_bash_commands_name_real_modules_configs_and_fields(page, command):
    for module in re.findall(r"python[\d.]*\s+-m\s+([\w.]+)", command):
        assert importlib.util.find_spec(module) is not None, f"{page}: no module {module}"
    for value in re.findall(r"--config=([^\s\"']+)", command):
        if "/" in value or value.endswith(".py"):  # a user's file: shown, not resolvable here
            continue
        assert value.partition(":")[0] in configs.names(), f"{page}: --config={value}"
    for path in re.findall(r"--config\.([\w.]+)=", command):
        if path.startswith("model.kwargs."):  # a user's builder's keyword arguments
            continue
        assert path in base_paths(), f"{page}: --config.{path}= is not a field of the tree"


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


LINK = re.compile(r"\]\(([^)\s]*)\)")


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_at_files_and_headings(page):
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    text = FENCE.sub("", text)  # links inside code blocks are not links
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path \
            else os.path.join(ROOT, page)
        assert os.path.exists(file), f"{page}: link to missing {target}"
        if anchor and file.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", FENCE.sub("", open(file, encoding="utf-8").read()),
                                  re.M)
            assert anchor in {slug(h) for h in headings}, f"{page}: no heading #{anchor} in {path}"


def test_the_checks_catch_bad_commands():
    """The bash checks above would fail on a misspelt field, config or module."""
    assert "optimizer.learning_rate" in base_paths()
    assert "optimizer.learnig_rate" not in base_paths()
    assert "digits_mlpp" not in configs.names()
    assert importlib.util.find_spec("recipes.trian") is None
    assert slug("Several machines: `multi_worker` and `TF_CONFIG`") == \
        "several-machines-multi_worker-and-tf_config"
