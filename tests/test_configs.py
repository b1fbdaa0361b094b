import pytest

from recipes import configs
from recipes.configs import base


@pytest.mark.parametrize("name", configs.names())
def test_every_builtin_config_loads_complete(name):
    cfg = configs.get(name)
    full = base.get_config()
    assert set(cfg.keys()) == set(full.keys())
    for branch in full.keys():
        assert set(cfg[branch].keys()) == set(full[branch].keys()), branch


@pytest.mark.parametrize("name", [n for n in configs.names() if n != "base"])
def test_builtin_configs_have_quick_mode_and_reject_bad_args(name):
    quick = configs.get(f"{name}:quick")
    assert quick.train.epochs <= configs.get(name).train.epochs
    with pytest.raises(ValueError, match="unknown argument"):
        configs.get(f"{name}:nonsense")


def test_builtin_docstrings_give_command_runtime_and_expectation():
    import importlib

    for name in configs.names():
        doc = importlib.import_module(f"recipes.configs.{name}").__doc__
        assert "Command:" in doc, name
        if name != "base":
            assert "Runtime:" in doc and "Expected:" in doc, name


def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError, match="digits_mlp"):
        configs.resolve_path("no_such_recipe")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        configs.get(str(tmp_path / "nope.py"))


def test_user_file_without_get_config(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("x = 1\n")
    with pytest.raises(ValueError, match="does not define get_config"):
        configs.get(str(path))


def test_user_file_with_syntax_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def get_config(:\n")
    with pytest.raises(ValueError, match="could not load"):
        configs.get(str(path))


def test_user_file_loads(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from recipes.configs import base\n"
                    "def get_config(arg=None):\n"
                    "    c = base.get_config()\n"
                    "    c.train.epochs = int(arg or 7)\n"
                    "    return c\n")
    assert configs.get(str(path)).train.epochs == 7
    assert configs.get(f"{path}:3").train.epochs == 3


def test_complete_merges_partial_dicts():
    cfg = configs.complete({"optimizer": {"learning_rate": 3e-4}, "model": {"hidden": [8, 4]}})
    assert cfg.optimizer.learning_rate == 3e-4
    assert cfg.model.hidden == (8, 4)
    assert cfg.optimizer.name == base.get_config().optimizer.name


@pytest.mark.parametrize("bad, match", [
    ({"optimizer": {"lr": 1.0}}, "optimizer.lr"),
    ({"nope": {}}, "'nope'"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": 3}, "train must be a mapping"),
])
def test_complete_rejects_unknown_or_mistyped_fields(bad, match):
    with pytest.raises(ValueError, match=match):
        configs.complete(bad)
