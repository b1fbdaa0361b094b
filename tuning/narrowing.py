"""Coarse to fine, the pure part: stages, narrowing ranges around the top trials, edge notes.

CS231n "Training Neural Networks II": go coarse to fine ("first stage: only a few epochs to
get a rough idea of what params work; second stage: longer running time, finer search") and
"if your best results are on the edge of your search range, shift the range".

* :class:`Stage`, :func:`parse_stages` — ``"20x2,10x8"``: 20 trials of 2 epochs, then 10 of 8.
* :func:`narrow` — fits every range around the top-k trials; shifts a range whose best value
  sits on its edge (the edge is ``recipes.ranges``' rule, shared with ``recipes.diagnose``).
* :func:`edge_notes` — the final stage's "best on the edge" warnings.

Pure: functions of recorded numbers (no KerasTuner, no TensorFlow, no files, no randomness).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from recipes.ranges import EDGE_MARGIN, edge_position, edge_side
from tuning import space as space_lib

__all__ = ["Stage", "parse_stages", "Note", "narrow", "edge_notes", "check_keep_top",
           "check_margin", "DOMAINS", "EDGE_MARGIN"]

#: Natural limits of fields a shifted range must not cross (beyond "a range that starts at
#: >= 0 stays >= 0"): probabilities and decay factors live in [0, 1].
DOMAINS = {
    "model.dropout": (0.0, 1.0),
    "optimizer.momentum": (0.0, 1.0),
    "optimizer.beta_1": (0.0, 1.0),
    "optimizer.beta_2": (0.0, 1.0),
    "optimizer.rho": (0.0, 1.0),
    "optimizer.momentum_start": (0.0, 1.0),
    "loss.label_smoothing": (0.0, 1.0),
    "augment.erasing": (0.0, 1.0),
    "schedule.decay_rate": (0.0, None),
    "schedule.epoch_decay": (0.0, 1.0),
    "schedule.alpha": (0.0, 1.0),
}


# -- stages ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Stage:
    """One coarse-to-fine stage: ``trials`` runs of ``epochs`` epochs each."""

    trials: int
    epochs: int

    def __post_init__(self):
        for name in ("trials", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Stage.{name} must be an integer >= 1, got {v!r}")

    def __str__(self) -> str:
        return f"{self.trials}x{self.epochs}"


def parse_stages(text: str | Sequence[Stage | Sequence[int]]) -> list[Stage]:
    """Parses ``"20x2,10x8"`` (trials x epochs per stage) or a list of stages/pairs.

    Raises:
        ValueError: naming the malformed fragment, e.g. ``'20x'``.
    """
    if not isinstance(text, str):
        out = []
        for s in text:
            out.append(s if isinstance(s, Stage) else Stage(*s))
        if not out:
            raise ValueError("stages: give at least one stage, e.g. 20x2,10x8")
        return out
    if not text.strip():
        raise ValueError("--stages is empty; write TRIALSxEPOCHS per stage, e.g. 20x2,10x8")
    out = []
    for fragment in text.split(","):
        frag = fragment.strip().lower()
        t, x, e = frag.partition("x")
        if not x or not t.strip().isdigit() or not e.strip().isdigit():
            raise ValueError(f"--stages: {fragment.strip()!r} is not TRIALSxEPOCHS; write e.g. "
                             "20x2,10x8 (20 trials of 2 epochs, then 10 of 8)")
        try:
            out.append(Stage(int(t), int(e)))
        except ValueError as err:
            raise ValueError(f"--stages: {fragment.strip()!r}: {err}") from None
    return out


# -- notes -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Note:
    """What :func:`narrow` did to one range, and why.

    ``kind``: ``narrowed`` (fitted around the top trials), ``shifted`` (the best sat on an
    edge: the range moved past it — a warning), ``edge`` (the best sits on an edge that
    cannot or will not move — a warning), ``pruned`` (choices no top trial used were
    dropped) or ``kept`` (unchanged).
    """

    param: str
    kind: str
    message: str

    @property
    def warning(self) -> bool:
        return self.kind in ("shifted", "edge")

    def __str__(self) -> str:
        return self.message


def _fmt(v: float) -> str:
    """A range bound or value in a note: three significant digits."""
    return f"{v:.3g}"


def _position(dim: space_lib.Dimension, value: float) -> float:
    return edge_position(dim.lo, dim.hi, value, dim.log)


def edge_notes(space: Mapping[str, space_lib.Dimension], best: Mapping[str, Any],
               margin: float = EDGE_MARGIN) -> list[Note]:
    """Warnings for numeric parameters whose best value lies within ``margin`` of an edge.

    Args:
        space: the ranges searched.
        best: the best trial's values (path → value).
        margin: fraction of the range (in log units for log ranges).

    Returns:
        One ``edge`` note per parameter on an edge.
    """
    out = []
    for path, dim in space.items():
        if not isinstance(dim, space_lib.NUMERIC) or path not in best:
            continue
        pos = _position(dim, float(best[path]))
        side = edge_side(pos, margin)
        if side is None:
            continue
        out.append(Note(path, "edge",
                        f"{path}: best {_fmt(best[path])} is at {100 * pos:.0f} % of "
                        f"[{_fmt(dim.lo)}, {_fmt(dim.hi)}]{' (log scale)' if dim.log else ''}, "
                        f"within {100 * margin:.0f} % of the {side} edge: shift the range "
                        f"past its {side} edge, the optimum may lie outside"))
    return out


# -- narrowing ---------------------------------------------------------------------------------

def check_keep_top(keep_top: Any, name: str = "--keep_top") -> None:
    """Raises ValueError unless ``keep_top`` is an integer >= 1 (``name`` in the message)."""
    if isinstance(keep_top, bool) or not isinstance(keep_top, int) or keep_top < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {keep_top!r}")


def check_margin(margin: Any) -> None:
    """Raises ValueError unless ``0 <= margin < 0.5``."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")


def narrow(space: Mapping[str, space_lib.Dimension], trials: Sequence[Mapping[str, Any]],
           keep_top: int = 5, margin: float = EDGE_MARGIN
           ) -> tuple[space_lib.Space, list[Note]]:
    """Fits every range around the top-k trials; shifts a range whose best sits on an edge.

    CS231n coarse-to-fine: the next stage samples where the good trials were. A numeric
    range becomes ``[min, max]`` of the top-k values widened by ``margin`` × the old width
    on each side (in log units for log ranges) and clipped to the old range — unless the
    best value lies within ``margin`` of an edge: then that side moves past the edge by half
    the old width (the lecture's "shift the range"), within the field's natural limits
    (``DOMAINS``; a range starting at >= 0 stays >= 0). Integer ranges are rounded outwards;
    a choice keeps the values the top-k trials used. Pure: no I/O, no randomness.

    Args:
        space: path → distribution of the stage that ran.
        trials: its trials, each ``{"values": {path: value}, "val_accuracy": float,
            "status": "completed" | "exploded" | ...}`` (status defaults to completed);
            exploded and failed trials never count as top trials.
        keep_top: how many of the best trials the new ranges span.
        margin: fraction of a range's width, for the widening and the edge test.

    Returns:
        ``(new_space, notes)``: a space of the same paths and kinds, and one or more notes
        per parameter; ``note.warning`` marks the edge cases.

    Raises:
        ValueError: ``keep_top < 1`` or ``margin`` outside [0, 0.5).
    """
    check_keep_top(keep_top, "keep_top")
    check_margin(margin)
    ok = [t for t in trials if t.get("status", "completed") == "completed"
          and t.get("val_accuracy") is not None and math.isfinite(t["val_accuracy"])]
    if not ok:
        return dict(space), [Note("*", "kept", "no completed trial to narrow around: "
                                  "ranges unchanged")]
    top = sorted(ok, key=lambda t: -t["val_accuracy"])[:keep_top]
    best = top[0]["values"]
    new: space_lib.Space = {}
    notes: list[Note] = []
    for path, dim in space.items():
        vals = [t["values"][path] for t in top if path in t["values"]]
        if not vals:
            new[path] = dim
            notes.append(Note(path, "kept", f"{path}: no top trial has a value; kept"))
        elif isinstance(dim, space_lib.Choice):
            new[path], note = _narrow_choice(path, dim, vals, len(top))
            notes.append(note)
        else:
            new[path], note = _narrow_range(path, dim, [float(v) for v in vals],
                                            float(best[path]), margin, len(top))
            notes.append(note)
    return new, notes


def _unit(dim: space_lib.Dimension) -> tuple[Any, Any]:
    """The axis a range is uniform on, and back: log for log ranges, identity otherwise."""
    if dim.log:
        return math.log, math.exp
    return float, float


def _domain(path: str, dim: space_lib.Dimension) -> tuple[float | None, float | None]:
    lo, hi = DOMAINS.get(path, (None, None))
    if lo is None and dim.lo >= 0:
        lo = 1.0 if isinstance(dim, space_lib.IntUniform) and dim.lo >= 1 else 0.0
    if dim.log and (lo is None or lo <= 0):
        lo = None  # a log range never reaches 0
    return lo, hi


def _narrow_choice(path: str, dim: space_lib.Choice, vals: list[Any], k: int
                   ) -> tuple[space_lib.Choice, Note]:
    """Keeps the choices the top ``k`` trials used (all of them if none matches)."""
    used = {space_lib.value_text(v) for v in vals}
    keep = tuple(v for v in dim.values if space_lib.value_text(v) in used) or dim.values
    new = space_lib.Choice(keep)
    if len(keep) < len(dim.values):
        return new, Note(path, "pruned", f"{path}: kept {new.spec()} (the values of the "
                         f"top {k} trials)")
    return new, Note(path, "kept", f"{path}: every choice is among the top {k} trials; kept")


def _narrow_range(path: str, dim: space_lib.Dimension, vals: list[float], best: float,
                  margin: float, k: int) -> tuple[space_lib.Dimension, Note]:
    f, finv = _unit(dim)
    lo, hi = f(dim.lo), f(dim.hi)
    width = hi - lo
    u = [f(v) for v in vals]
    a = max(min(u) - margin * width, lo)
    b = min(max(u) + margin * width, hi)
    side = edge_side(_position(dim, best), margin)
    if side == "low":
        a = lo - width / 2
    elif side == "high":
        b = hi + width / 2
    dlo, dhi = _domain(path, dim)
    if dlo is not None:
        a = max(a, f(dlo)) if not dim.log or dlo > 0 else a
    if dhi is not None:
        b = min(b, f(dhi))
    if b - a < 1e-3 * width:  # all top values equal and margin 0: keep a sliver around them
        a, b = a - 5e-4 * width, b + 5e-4 * width
    new = _make(dim, finv(a), finv(b))
    old = f"[{_fmt(dim.lo)}, {_fmt(dim.hi)}]"
    now = f"[{_fmt(new.lo)}, {_fmt(new.hi)}]"
    scale = " (log scale)" if dim.log else ""
    if side is None:
        return new, Note(path, "narrowed", f"{path}: {old} -> {now}, around the top {k} "
                         f"trials ({_fmt(min(vals))} .. {_fmt(max(vals))})")
    moved = (new.lo < dim.lo) if side == "low" else (new.hi > dim.hi)
    where = f"best {_fmt(best)} is within {100 * margin:.0f} % of the {side} edge of {old}{scale}"
    if not moved:
        return new, Note(path, "edge", f"{path}: {where}, which is the field's limit; "
                         f"range {now}")
    return new, Note(path, "shifted", f"{path}: {where}; shifted the range "
                     f"{'down' if side == 'low' else 'up'} to {now}")


def _make(dim: space_lib.Dimension, lo: float, hi: float) -> space_lib.Dimension:
    if isinstance(dim, space_lib.IntUniform):
        ilo, ihi = math.floor(lo + 1e-9), math.ceil(hi - 1e-9)
        if dim.log:
            ilo = max(ilo, 1)
        if ihi <= ilo:
            ihi = ilo + 1
        return space_lib.IntUniform(ilo, ihi, dim.log)
    return type(dim)(lo, hi)
