"""What a search was asked for (``search.json``), and whether a workdir holds that search.

A rerun of the same command resumes the search in its workdir; a different request there is
refused (naming what differs) unless ``--overwrite``, which stages the new search beside the
old one (``recipes.workdir.replacing``). The request is compared as JSON, so it is written
and read back through one sanitizer (``tuning.results.json_tree``); fields a newer babysit
added to (or dropped from) the config tree are not the user's change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from recipes import io
from recipes import workdir as wd
from tuning import results
from tuning import space as space_lib
from tuning.narrowing import Stage

__all__ = ["make", "check", "continues", "differences"]


def make(cfg: ml_collections.ConfigDict, space: space_lib.Space, stages: Sequence[Stage], *,
         strategy: str, keep_top: int, seed: int, margin: float) -> dict[str, Any]:
    """The request ``search.json`` holds: config (less ``train.verbose``), space, stages, ...

    ``train.verbose`` changes no result, so a rerun may change it.
    """
    tree = results.json_tree(cfg.to_dict())
    tree.get("train", {}).pop("verbose", None)  # changes no result
    return {"config": tree, "space": space_lib.to_string(space),
            "stages": [[s.trials, s.epochs] for s in stages], "strategy": strategy,
            "keep_top": keep_top, "seed": seed, "margin": margin}


def check(workdir: str, request: dict[str, Any], overwrite: bool) -> None:
    """Refuses a workdir that holds another search (or a finished one) unless ``overwrite``.

    Writes nothing: with ``overwrite`` the new search is staged beside the old one and
    swapped in once it has finished (``recipes.workdir.replacing``).

    Raises:
        ValueError: naming what differs, and the ways out.
    """
    wd.check_path(workdir)
    path = os.path.join(workdir, "search.json")
    if overwrite:
        return
    if os.path.exists(path):
        old = io.read_json(path, what="search request")
        diff = differences(old, request)
        if diff:
            raise ValueError(f"--workdir {workdir} holds another search (differs in "
                             f"{', '.join(diff)}); rerun the same command to resume it, use "
                             "a new workdir, or --overwrite to replace it once the new "
                             "search has finished")
    elif os.path.isdir(os.path.join(workdir, "kt")):
        raise ValueError(f"--workdir {workdir} holds KerasTuner state but no search.json; "
                         "use a new workdir or --overwrite")


def continues(directory: str, request: dict[str, Any], finished_too: bool = False) -> bool:
    """Whether ``directory`` holds this very search, unfinished (or finished too)."""
    return wd.holds_run(directory, "search.json", "result.json",
                        lambda old: not differences(old, request), finished_too=finished_too)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON trees differ (``config.optimizer.name``, ``space``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if prefix.startswith("config.") and (key not in old or key not in new):
                continue  # a field a newer babysit added (or dropped): not the user's change
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")] if _canonical(old) != _canonical(new) else []


def _canonical(x: Any) -> str:
    return json.dumps(results.json_tree(x), sort_keys=True)
