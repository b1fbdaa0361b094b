"""Writes ``docs/results/performance.md`` from the benchmarks' JSON files, no number by hand.

CS231n "Hardware and software" asks where the time goes; this page gathers the answers
measured here: the Fashion-MNIST race (``fashion_race/race.json``), the recipe's overhead
over a bare ``fit`` (``overhead.json``), the input pipeline's headroom (``pipeline.json``)
and the machine's ceiling (``machine.json``). Every number comes from those files, with
the command and date that produced it; a missing file reads "not yet measured".

Command: ``python benchmarks/performance_report.py [--results DIR] [--out PATH]``
(default ``docs/results`` and ``docs/results/performance.md``; < 1 s after imports).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipes import io  # noqa: E402

NOT_MEASURED = "not yet measured"
SOURCES = {  # section: (file under --results, command that writes it)
    "race": ("fashion_race/race.json", "python benchmarks/fashion_race.py"),
    "overhead": ("overhead.json", "python benchmarks/overhead.py"),
    "pipeline": ("pipeline.json", "python benchmarks/pipeline.py"),
    "machine": ("machine.json", "python benchmarks/machine.py"),
}


def fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    """A number formatted, ``-`` for None/missing, booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:{spec}}{unit}"
    return str(value)


def pct(fraction: Any) -> str:
    """A fraction as a percentage with one decimal, ``-`` if missing."""
    return fmt(None if fraction is None else 100 * fraction, ".1f", "%")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def provenance(d: dict[str, Any], path: str) -> list[str]:
    """The lines naming the file, command, date and machine of one JSON."""
    m = d.get("machine", {})
    quick = d.get("quick") or "--quick" in str(d.get("command", ""))
    note = " (a --quick run: smoke-test sizes, not the real numbers)" if quick else ""
    return [f"Source: `{path}`{note}; "
            f"command `{d.get('command', '?')}`; date {d.get('date', '?')}; "
            f"{m.get('cpu_model', '?')}, {m.get('sched_affinity', m.get('nproc', '?'))} cores "
            f"(load average at start {fmt(m.get('loadavg_at_start'))}); "
            f"TensorFlow {m.get('tensorflow', '?')}.", ""]


def race(d: dict[str, Any]) -> list[str]:
    """The race's table: one row per contestant."""
    thresholds = [f"{t:g}" for t in d.get("thresholds", [])]
    rows = []
    for letter in ("a", "b", "c", "d"):
        r = d.get("runs", {}).get(letter)
        if r is None:
            rows.append([letter, NOT_MEASURED, *["-"] * (4 + len(thresholds))])
            continue
        rows.append([letter, r.get("label", r.get("name", "?")), fmt(r.get("epochs"), "d"),
                     fmt(r.get("final_test_accuracy"), ".4f"),
                     *(fmt(r.get("seconds_to", {}).get(t), ".0f", " s") for t in thresholds),
                     fmt(r.get("final_seconds"), ".0f", " s"),
                     fmt(r.get("setup_seconds"), ".0f", " s")])
    lines = table(["", "contestant", "epochs", "final test acc",
                   *(f"time to {t}" for t in thresholds), "training time", "setup"], rows)
    lines += ["Time is wall-clock seconds from the start of `fit`, the per-epoch test "
              "evaluation excluded; a recipe's last point is its ten-crop accuracy, after "
              "the run's final evaluation. Plot: `fashion_race/race.png`.", ""]
    return lines + race_targets(d.get("targets", {}))


def race_targets(t: dict[str, Any]) -> list[str]:
    """The targets read off the race's curves (``fashion_race.targets``), met or not."""
    rows = []
    if "fast_accuracy" in t:
        x = t["fast_accuracy"]
        rows.append(["c reaches 0.930", "<= 600 s", fmt(x.get("seconds_to_0.93"), ".0f", " s"),
                     fmt(x.get("met"))])
    if "fast_vs_cnn" in t:
        x = t["fast_vs_cnn"]
        rows.append([f"c reaches b's final {fmt(x.get('cnn_final_accuracy'), '.4f')} "
                     f"(b: {fmt(x.get('cnn_seconds'), '.0f', ' s')})", "<= 0.5 of b's time",
                     f"{fmt(x.get('fast_seconds_to_it'), '.0f', ' s')} "
                     f"({fmt(x.get('ratio'), '.2f')} of b's)", fmt(x.get("met"))])
    if "best_accuracy" in t:
        x = t["best_accuracy"]
        rows.append(["d reaches 0.945", "<= 1800 s",
                     fmt(x.get("seconds_to_0.945"), ".0f", " s"), fmt(x.get("met"))])
    return table(["target", "limit", "measured", "met"], rows) + [""] if rows else []


def overhead(d: dict[str, Any]) -> list[str]:
    """Recipe and monitored runs vs bare ``fit``: median steps/s ratios, wall and CPU."""
    w = d.get("workload", {})
    rows = []
    for name, c in d.get("comparisons", {}).items():
        rows.append([name, fmt(c.get("median_ratio")), fmt(c.get("median_cpu_ratio")),
                     fmt(c.get("target"), ".2f"),
                     f"{fmt(c.get('meets_target'))} / {fmt(c.get('meets_target_cpu'))}",
                     fmt(c.get("extra_cpu_seconds_per_epoch"), ".3f", " s"),
                     fmt(c.get("cpu_ratio_full_epoch"))])
    steps = d.get("median_steps_per_second", {})
    return [f"{w.get('config', '?')} on {fmt(w.get('examples'), 'd')} {w.get('dataset', '?')} "
            f"images, {fmt(w.get('steps_per_epoch'), 'd')} steps per epoch, epochs "
            f"{w.get('timed_epochs', '?')} timed, {fmt(w.get('rounds'), 'd')} pairs. Median "
            f"steps/s: " + ", ".join(f"{k} {fmt(v, '.2f')}" for k, v in steps.items()) + ".", "",
            *table(["vs bare fit", "steps/s ratio (wall)", "steps/CPU-s ratio", "target",
                    "meets (wall / CPU)", "extra CPU per epoch",
                    f"CPU ratio over a full epoch ({fmt(w.get('full_epoch_steps'), 'd')} steps)"],
                   rows),
            "Whole runs alternate (a recipe run cannot be interleaved epoch by epoch), so the "
            "wall-clock ratio carries the noise of other jobs on a shared machine; the CPU-time "
            "ratio does not.", ""]


def pipeline(d: dict[str, Any]) -> list[str]:
    """Images/s of the input pipeline alone vs what fit consumes."""
    r = d.get("images_per_second", {})
    cpu = d.get("cpu_ms_per_1k_images", {})
    rows = [[k, fmt(r.get(k), ".0f"), fmt(cpu.get(k), ".1f")] for k in r]
    return [*table(["measured", "images/s", "CPU ms per 1000 images"], rows),
            f"Pipeline / fit: **{fmt(d.get('ratio'), '.1f')}x** (without augmentation "
            f"{fmt(d.get('ratio_no_augment'), '.1f')}x); while training, the pipeline takes "
            f"{fmt(d.get('pipeline_cores_needed'), '.3f')} of a core, and the augmentation "
            f"{pct(d.get('augment_cpu_fraction_of_fit'))} "
            "of the CPU time of a training step.", ""]


def machine_section(d: dict[str, Any]) -> list[str]:
    """Matmul ceiling, the recipe's FLOP rate, and the speed knobs."""
    mm, model = d.get("matmul", {}), d.get("model", {})
    variants = d.get("training", {}).get("variants", {})
    lines = [f"float32 matmul {fmt(mm.get('n'), 'd')}x{fmt(mm.get('n'), 'd')}: "
             f"**{fmt(mm.get('gflops'), '.1f')} GFLOP/s** "
             f"(median of {fmt(mm.get('repeats'), 'd')}). "
             f"{model.get('config', '?')}: {fmt(model.get('macs_per_example'), ',d')} MACs per "
             f"example, {fmt((model.get('train_flops_per_example') or 0) / 1e6, '.1f')} MFLOP per "
             f"training example (3 x 2 x MACs) -> **{fmt(d.get('achieved_gflops'), '.2f')} "
             f"GFLOP/s** achieved, {pct(d.get('fraction_of_matmul'))} "
             "of the matmul rate.", ""]
    rows = [[k, fmt(v.get("batch_size"), "d"), str(v.get("jit_compile")),
             fmt(v.get("steps_per_execution"), "d"), str(v.get("dtype_policy")),
             fmt(v.get("images_per_second"), ".0f"), fmt(v.get("ratio_to_base"), ".2f")]
            for k, v in variants.items()]
    lines += table(["variant", "batch", "jit_compile", "steps/execution", "dtype", "images/s",
                    "vs base"], rows)
    threads = d.get("threads", {})
    if "skipped" in threads:
        lines += [f"Threads: skipped ({threads['skipped']}).", ""]
    elif threads:
        lines += table(["threads", "images/s", "vs first"],
                       [[k, fmt(v.get("images_per_second"), ".0f") if "error" not in v
                         else f"error: {v['error']}", fmt(v.get("ratio_to_first"), ".2f")]
                        for k, v in threads.items()])
    bf16 = d.get("bf16", {})
    why = f"; {bf16['why_not']}" if bf16.get("why_not") else ""
    lines += [f"bf16: CPU flags {', '.join(bf16.get('cpu_flags', [])) or 'none'}; measured: "
              f"{fmt(bf16.get('measured'))}{why}.", ""]
    lines += [f"- {n}" for n in d.get("notes", [])] + ([""] if d.get("notes") else [])
    return lines


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "race": ("Fashion-MNIST race: accuracy vs wall time", race),
    "overhead": ("Overhead of `recipes.train.run` over a bare `fit`", overhead),
    "pipeline": ("Input pipeline vs training step", pipeline),
    "machine": ("The machine's ceiling and the speed knobs", machine_section),
}


def render(results_dir: str) -> str:
    """The whole page, from the JSON files under ``results_dir``."""
    lines = ["# Performance on 2 CPU cores", "",
             "Generated by `python benchmarks/performance_report.py` from the JSON files "
             "the benchmarks write; rerun a benchmark, then this, to update.", ""]
    for key, (title, section) in SECTIONS.items():
        rel, cmd = SOURCES[key]
        path = os.path.join(results_dir, rel)
        lines += [f"## {title}", "", f"Command: `{cmd}`", ""]
        if not os.path.exists(path):
            lines += [f"{NOT_MEASURED} (no `{rel}`).", ""]
            continue
        try:
            d = io.read_json(path, what="benchmark results")
            lines += provenance(d, rel) + section(d)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            lines += [f"could not read `{rel}`: {type(e).__name__}: {e}", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> str:
    """Writes the page atomically; returns its path."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="docs/results", help="where the JSON files are")
    p.add_argument("--out", default="", help="the page (default RESULTS/performance.md)")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.results, "performance.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    io.write_text(out, render(args.results))
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
