"""Renders ``docs/lecture_claims.md``: every lecture claim, its numbers and its verdict.

The lectures (CS231n "Training Neural Networks" I-III, AlexNet, Hinton et al. 2015, ...)
make claims such as "ReLU trains faster than sigmoid" or "ensembles give 1-2 %". Each
experiment in ``recipes/experiments/`` measures some of them and writes its verdicts, computed
from its numbers, into ``results.json`` (``claims``: ``{id, claim, source, verdict, measured,
why}``; see ``recipes.experiments.common``). This module gathers the committed
``docs/results/<experiment>/results.json`` files into one Markdown page, so the page is
generated, never typed. Two results predate the ``claims`` key (``init_stats`` and
``ensembles_distillation``); their verdicts are computed here from their numbers.

Command: ``python -m recipes.experiments.claims --results=docs/results
--out=docs/lecture_claims.md`` (``--check``: exit 1 if the page is out of date). The pure
function :func:`render` does the work; the page carries no clock time, so regenerating it
from the same results gives the same text.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recipes import cli, io

# The lecture's experiments in lecture order; a results folder not listed here is appended.
EXPERIMENTS = (
    "preprocessing",
    "init_stats",
    "activations",
    "batchnorm",
    "optimizers",
    "schedules",
    "regularization",
    "augmentation_tta",
    "ensembles_distillation",
)
NOT_RUN = "not yet run in full"


# -- claims of results that predate the ``claims`` key ---------------------------------------

def _claim(claim_id: str, text: str, source: str, verdict: str, measured: str,
           why: str = "") -> dict[str, str]:
    # Same record as recipes.experiments.common.claim, without importing TensorFlow.
    return {"id": claim_id, "claim": text, "source": source, "verdict": verdict,
            "measured": measured, "why": why}


def init_stats_claims(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Verdicts of the weight-initialization experiment, from its per-layer statistics.

    CS231n "Training Neural Networks I", weight initialization: a 10-layer tanh/ReLU net's
    activation statistics at initialization (thresholds as in ``init_stats``'s docstring).
    """
    s = results.get("summary", {})
    src = "CS231n Training Neural Networks I, weight initialization"
    out = []

    def layer_text(name: str) -> str:
        r = s[name]
        return f"{name}: std {r['first_std']:.3g} at layer 1, {r['last_std']:.3g} at the last"

    if "tanh+small" in s:
        r = s["tanh+small"]
        ok = r["last_std"] < 1e-3 and r["std_ratio"] > 100
        out.append(_claim(
            "init_small_collapses", "tanh with small random weights (0.01 randn): the "
            "activations collapse to zero in the deep layers", src,
            "confirmed" if ok else "not confirmed here", layer_text("tanh+small"),
            "" if ok else "the last layer's std stayed above 1e-3"))
    if "tanh+large" in s:
        r = s["tanh+large"]
        ok = r["last_saturated"] > 0.5
        out.append(_claim(
            "init_large_saturates", "tanh with large weights (randn): almost every unit "
            "saturates at -1 or +1", src, "confirmed" if ok else "not confirmed here",
            f"tanh+large: {r['last_saturated']:.1%} of the last layer's units saturated "
            f"(std {r['last_std']:.3g})",
            "" if ok else "fewer than half of the units saturated"))
    if "relu+xavier" in s:
        r = s["relu+xavier"]
        ok = r["std_ratio"] >= 10
        out.append(_claim(
            "init_relu_xavier_shrinks", "ReLU with Xavier init (randn / sqrt(fan_in)): the "
            "std halves layer after layer", src + "; He et al. 2015",
            "confirmed" if ok else "not confirmed here",
            layer_text("relu+xavier") + f" ({r['std_ratio']:.3g}x smaller)",
            "" if ok else "the std shrank less than 10x over the layers"))
    if "relu+he" in s:
        r = s["relu+he"]
        ok = 0.5 <= r["std_ratio"] <= 2
        out.append(_claim(
            "init_relu_he_holds", "ReLU with He init (randn / sqrt(fan_in / 2)): the std "
            "holds across layers", "He et al. 2015; " + src,
            "confirmed" if ok else "not confirmed here",
            layer_text("relu+he") + f" (ratio {r['std_ratio']:.3g})",
            "" if ok else "the std changed more than 2x over the layers"))
    bn = {k: v for k, v in s.items() if k.endswith("+batch")}
    if bn:
        ratios = [v["std_ratio"] for v in bn.values()]
        stds = [v["last_std"] for v in bn.values()]
        sat = max(v["last_saturated"] for v in bn.values())
        ok = all(0.5 <= q <= 2 for q in ratios) and min(stds) > 0.1 and sat < 0.05
        out.append(_claim(
            "init_batchnorm_fixes_all", "batch normalization before every activation keeps "
            "every init well scaled", "Ioffe & Szegedy 2015; " + src,
            "confirmed" if ok else "not confirmed here",
            f"{len(bn)} inits with BN: last-layer std {min(stds):.3g}-{max(stds):.3g}, "
            f"first/last std ratio {min(ratios):.3g}-{max(ratios):.3g}, at most {sat:.1%} "
            "saturated",
            "" if ok else "some init with BN still shrank, grew or saturated"))
    return out


def ensembles_distillation_claims(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Verdicts of the ensembles / ten-crop / distillation experiment, from its accuracies.

    CS231n "Training Neural Networks II" (model ensembles), AlexNet's ten-crop testing
    (Krizhevsky et al. 2012) and knowledge distillation (Hinton, Vinyals & Dean 2015).
    """
    out = []
    members = results.get("members", [])
    ens = results.get("ensemble", {})
    center = [m["test_accuracy"] for m in members]
    if center and "test_accuracy" in ens:
        mean, best = statistics.fmean(center), max(center)
        gain = 100 * (ens["test_accuracy"] - mean)
        ok = gain >= 1.0
        out.append(_claim(
            "ensemble_gain", "an ensemble of independently trained models gives 1-2 % extra "
            "accuracy", "CS231n Training Neural Networks II, model ensembles",
            "confirmed" if ok else "not confirmed here",
            f"{len(center)} members {_pcts(center)}: ensemble {100 * ens['test_accuracy']:.2f} "
            f"% ({gain:+.2f} points over the mean member, "
            f"{100 * (ens['test_accuracy'] - best):+.2f} over the best)",
            "" if ok else (
                f"the ensemble {'helps' if gain > 0 else 'does not help'}, by less than 1 "
                "point: its members are the same small net and recipe from different seeds, "
                "so their errors overlap; the lecture's figure is for larger, more diverse "
                "ImageNet models")))
    pairs = [(m["test_accuracy"], m["test_ten_crop_accuracy"]) for m in members
             if m.get("test_ten_crop_accuracy") is not None]
    if "test_ten_crop_accuracy" in ens and "test_accuracy" in ens:
        pairs.append((ens["test_accuracy"], ens["test_ten_crop_accuracy"]))
    if pairs:
        gains = [100 * (t - c) for c, t in pairs]
        verdict = ("confirmed" if min(gains) > 0 else
                   "not confirmed here" if max(gains) <= 0 else "depends")
        crop = results.get("config", {}).get("augment", {}).get("crop_size")
        out.append(_claim(
            "ten_crop_gain", "averaging the softmax over ten crops (corners, center, mirrored) "
            "adds accuracy at test time", "Krizhevsky et al. 2012, section 4.1; CS231n",
            verdict,
            "ten-crop minus center crop, points: " + ", ".join(f"{g:+.2f}" for g in gains)
            + f" ({len(members)} members{', ensemble' if len(pairs) > len(members) else ''})",
            "" if verdict == "confirmed" else (
                "the gains change sign from model to model: with "
                + (f"{crop}-pixel crops of " if crop else "crops of ")
                + "small images the ten windows shift by a pixel or two and add little "
                "information" + _noise_note(gains, center))))
    scratch = results.get("student_scratch", {}).get("test_accuracy")
    distilled = results.get("student_distilled", {})
    if scratch is not None and distilled.get("test_accuracy") is not None:
        gain = 100 * (distilled["test_accuracy"] - scratch)
        ok = gain > 0
        t = results.get("teacher", {})
        teacher = t.get("test_accuracy")
        source = (f"the ensemble of {len(t['runs'])} {t['runs'][-1]} runs" if t.get("runs")
                  else "the teacher" if teacher is not None else "the ensemble")
        teacher = teacher if teacher is not None else ens.get("test_accuracy")
        runs = results.get("student_scratch", {}).get("runs") or []
        out.append(_claim(
            "distillation_beats_scratch", f"a student distilled from {source} beats the same "
            "network trained from scratch", "Hinton, Vinyals & Dean 2015",
            "confirmed" if ok else "not confirmed here",
            (f"teacher {100 * teacher:.2f} %, " if teacher is not None else "")
            + f"distilled {100 * distilled['test_accuracy']:.2f} % vs scratch "
            + (" / ".join(f"{100 * r['test_accuracy']:.2f} %" for r in runs) if runs
               else f"{100 * scratch:.2f} %")
            + f" ({gain:+.2f} points over the best; T={distilled.get('temperature')}, "
            f"alpha={distilled.get('alpha')})" + _val_note(distilled, runs),
            "" if ok else _distill_why(teacher, scratch)))
    return out


def _val_note(distilled: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str:
    """The same comparison on the validation split, when both sides report it."""
    scratch = [r["val_accuracy"] for r in runs if r.get("val_accuracy") is not None]
    if distilled.get("val_accuracy") is None or not scratch:
        return ""
    return (f"; validation: distilled {100 * distilled['val_accuracy']:.2f} % vs "
            + " / ".join(f"{100 * v:.2f} %" for v in scratch))


def _noise_note(gains: Sequence[float], accuracies: Sequence[float]) -> str:
    spread = 100 * (max(accuracies) - min(accuracies)) if len(accuracies) > 1 else 0.0
    if spread and max(abs(g) for g in gains) < spread:
        return f"; every change is smaller than the spread between seeds ({spread:.2f} points)"
    return ""


def _distill_why(teacher: float | None, scratch: float) -> str:
    gap = (f"the teacher ({100 * teacher:.2f} %) is only {100 * (teacher - scratch):.1f} points "
           "above the scratch student, so its soft targets carry little extra; "
           if teacher is not None else "")
    return (gap + "one untuned setting of T and alpha, trained for the scratch student's "
            "epochs (Hinton et al. tune both and train longer)")


def _pcts(values: Sequence[float]) -> str:
    return "/".join(f"{100 * v:.2f}" for v in values) + " %"


DERIVED: dict[str, Callable[[Mapping[str, Any]], list[dict[str, str]]]] = {
    "init_stats": init_stats_claims,
    "ensembles_distillation": ensembles_distillation_claims,
}


def claims_of(name: str, results: Mapping[str, Any]) -> list[dict[str, str]]:
    """The claims of one experiment: its ``claims`` key, else those derived from its numbers."""
    if "claims" in results:
        return list(results["claims"])
    if name in DERIVED:
        return DERIVED[name](results)
    return []


def is_quick(name: str, results: Mapping[str, Any]) -> bool:
    """Whether the results come from a ``--quick`` run (init_stats: fewer units than 500)."""
    if "quick" in results:
        return bool(results["quick"])
    setup = results.get("setup", {})
    return name == "init_stats" and setup.get("units", 500) < 500


def command_of(name: str, results: Mapping[str, Any] | None) -> str:
    """The command that reproduces an experiment's full run."""
    if results and results.get("command"):
        return str(results["command"])
    return f"python -m recipes.experiments.{name} --workdir=DIR"


# -- rendering ---------------------------------------------------------------------------------

def _cell(text: Any) -> str:
    """One Markdown table cell: no newlines, pipes escaped."""
    return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def _meta(results: Mapping[str, Any]) -> str:
    parts = [f"dataset `{results['dataset']}`"] if results.get("dataset") else []
    setup = results.get("setup", {})
    if not parts and {"examples", "layers", "units"} <= set(setup):
        parts = [f"{setup['examples']} unit-Gaussian inputs through {setup['layers']} layers "
                 f"of {setup['units']} units"]
    machine = results.get("machine")
    if isinstance(machine, Mapping):  # benchmarks/machine.py's info(): cpu_model, nproc, date
        date = results.get("date") or machine.get("date")
        cores = f"{machine['nproc']} cores" if machine.get("nproc") else ""
        machine = ", ".join(str(v) for v in (machine.get("cpu_model"), cores) if v)
    else:
        date = results.get("date")
    parts += [f"{k} {v}" for k, v in (("date", date), ("machine", machine)) if v]
    return ", ".join(parts)


def order(names: Sequence[str]) -> list[str]:
    """``EXPERIMENTS`` first, in lecture order, then any other name alphabetically."""
    return [n for n in EXPERIMENTS if n in names] + sorted(set(names) - set(EXPERIMENTS))


def render(results_by_experiment: Mapping[str, Mapping[str, Any] | None]) -> str:
    """Renders the claims page from ``{experiment: results.json dict, or None if missing}``.

    Every name of ``EXPERIMENTS`` is listed, given or not. An experiment with no results, or
    with results of a ``--quick`` run, is listed under "not yet run in full"; every other
    one gets a section with its command and one table row per claim.

    Args:
        results_by_experiment: the experiments' parsed ``results.json`` (None: missing).

    Returns:
        The Markdown page, ending with a newline.
    """
    names = order(list(set(EXPERIMENTS) | set(results_by_experiment)))
    full = [n for n in names if results_by_experiment.get(n)
            and not is_quick(n, results_by_experiment[n])]
    counts = {v: 0 for v in ("confirmed", "depends", "not confirmed here")}
    sections = []
    for name in full:
        res = results_by_experiment[name]
        claims = claims_of(name, res)
        for c in claims:
            counts[c.get("verdict", "")] = counts.get(c.get("verdict", ""), 0) + 1
        lines = [f"## {name}", "", f"`{command_of(name, res)}`"
                 + (f" ({_meta(res)})" if _meta(res) else ""), ""]
        if not claims:
            lines += ["No claims recorded in this experiment's results.", ""]
        else:
            lines += ["| claim | source | measured | verdict | why (where not confirmed) |",
                      "| --- | --- | --- | --- | --- |"]
            for c in claims:
                why = "" if c.get("verdict") == "confirmed" else c.get("why", "")
                lines.append(f"| {_cell(c.get('claim'))} | {_cell(c.get('source'))} | "
                             f"{_cell(c.get('measured'))} | **{_cell(c.get('verdict'))}** | "
                             f"{_cell(why)} |")
            lines.append("")
        sections.append("\n".join(lines))

    head = [
        "# The lectures' claims, measured",
        "",
        "<!-- Generated by `python -m recipes.experiments.claims --results=docs/results "
        "--out=docs/lecture_claims.md` from docs/results/*/results.json: do not edit. -->",
        "",
        "Generated from the committed `docs/results/<experiment>/results.json` files; do not "
        "edit by hand. Each claim's verdict is computed from the numbers the experiment "
        "measured (*confirmed*, *not confirmed here*, or *depends*), and where it is not "
        "confirmed the last column gives the likely reason. Rerun an experiment with its "
        "command, copy its `results.json` into `docs/results/<experiment>/`, then regenerate "
        "this page.",
        "",
        f"Verdicts: {counts['confirmed']} confirmed, {counts['depends']} depends, "
        f"{counts['not confirmed here']} not confirmed here, over {len(full)} experiment"
        f"{'s' if len(full) != 1 else ''} run in full.",
        "",
    ]
    pending = [n for n in names if n not in full]
    tail = []
    if pending:
        tail = [f"## {NOT_RUN[0].upper() + NOT_RUN[1:]}", ""]
        for n in pending:
            res = results_by_experiment.get(n)
            note = ("only a `--quick` run (digits, tiny models) is committed" if res
                    else "no results committed")
            tail.append(f"- **{n}**: {note}; run `{command_of(n, None)}`")
        tail.append("")
    return "\n".join(head + sections + tail).rstrip("\n") + "\n"


# -- files and command line ------------------------------------------------------------------

def load(results_dir: str) -> dict[str, dict[str, Any]]:
    """Reads every ``results_dir/<experiment>/results.json``.

    Raises:
        ValueError: ``results_dir`` is not a directory, or a results file is corrupt.
    """
    import json

    if not os.path.isdir(results_dir):
        raise ValueError(f"--results={results_dir}: not a directory; give the folder holding "
                         "<experiment>/results.json (docs/results)")
    out = {}
    for name in sorted(os.listdir(results_dir)):
        path = os.path.join(results_dir, name, "results.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                out[name] = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); rerun the experiment") from e
        if not isinstance(out[name], dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(out[name]).__name__}")
    return out


def generate(results_dir: str) -> str:
    """The page for the results in ``results_dir``."""
    return render(load(results_dir))


def main(argv: list[str]) -> None:
    """``python -m recipes.experiments.claims --results=DIR --out=FILE [--check]``."""
    from absl import flags


    f = flags.FLAGS
    prog = "recipes.experiments.claims"
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; every option is a --flag=value", prog=prog)
    try:
        text = generate(f.results)
    except ValueError as e:
        cli.fail(str(e), prog=prog)
    if f.check:
        try:
            with open(f.out, encoding="utf-8") as fh:
                same = fh.read() == text
        except OSError:
            same = False
        print(f"{f.out} is {'up to date' if same else 'out of date; regenerate it'}")
        sys.exit(0 if same else 1)
    io.write_text(f.out, text)
    print(f"wrote {f.out}")


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("results", "docs/results", "Folder of <experiment>/results.json.")
    flags.DEFINE_string("out", "docs/lecture_claims.md", "The Markdown page to write.")
    flags.DEFINE_bool("check", False, "Write nothing; exit 1 if --out is out of date.")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import app


    _define_flags()
    app.run(main, argv=sys.argv, flags_parser=cli.parse_flags)
