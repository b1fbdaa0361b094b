"""The one vocabulary of what went wrong: causes, their remedies, and who wins a disagreement.

CS231n lecture 6 (babysitting the learning process) reads symptoms — a loss that explodes,
a flat curve, dead ReLUs, a train/val gap — and names a cause with a fix. Every check in
babysit (the checks before training, the diagnosis of a run's curves, the repair loop)
speaks through this module, so two findings never name one cause two ways, and never
give opposite advice. Pure: numbers and names in, findings and remedies out.

* :data:`CAUSES` — the documented list, most fundamental first. The order *is* the
  resolution rule: when two findings disagree or one explains the other, the cause that
  comes first wins (a broken output layer or unscaled input makes every later symptom; a
  run that diverges is never told to raise its learning rate).
* :func:`remedies` — the candidate fixes for a cause, in the order the repair loop tries
  them: config overrides (``{"optimizer.learning_rate": 1e-3}``, with their CLI flags) or a
  named model transformation (``models.transform``) for a user's own network.
* :func:`resolve` — orders findings most serious first and marks the losers of each
  disagreement as ``explained_by`` the winner.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CAUSES", "SEVERITIES", "Cause", "Remedy", "Finding", "Context", "remedies",
           "resolve", "serious", "flags_for", "describe"]

SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass(frozen=True)
class Cause:
    """One cause: what it means and the knob it turns (two causes on one knob disagree)."""

    name: str
    meaning: str
    knob: str = ""  # e.g. "learning_rate": causes that push one knob opposite ways conflict
    direction: int = 0  # +1 raise the knob, -1 lower it, 0 no direction


#: The documented causes, most fundamental first (this order resolves disagreements).
CAUSES: dict[str, Cause] = {c.name: c for c in (
    Cause("output_loss_mismatch", "the output layer, the loss and the labels disagree "
          "(units, softmax/sigmoid, from_logits, one-hot vs sparse)"),
    Cause("scaled_labels", "class labels were scaled like inputs (e.g. divided by 255)"),
    Cause("unnormalized_inputs", "inputs far outside [-1, 1] or with constant features"),
    Cause("missing_nonlinearity", "stacked Dense/Conv layers with no activation between "
          "them collapse into one linear map"),
    Cause("strong_regularization", "dropout above 0.5 or weight decay so strong the model "
          "cannot fit the training set", "capacity", +1),
    Cause("not_shuffled", "examples arrive in the same (sorted) order every epoch"),
    Cause("batch_too_small", "so few examples per step that the loss is mostly noise",
          "batch_size", +1),
    Cause("bad_initialization", "weights too small or too large at the start: a plateau, "
          "then a drop, or a wrong initial loss"),
    Cause("vanishing_gradients", "gradients shrink layer after layer towards the input"),
    Cause("saturated_units", "tanh/sigmoid units on their flat ends"),
    Cause("learning_rate_too_high", "updates too large: the loss diverges, jumps or the "
          "updates exceed ~1e-2 of the weights", "learning_rate", -1),
    Cause("exploding_gradients", "gradients grow layer after layer towards the input",
          "learning_rate", -1),
    Cause("dead_units", "ReLUs that never fire (too large a step or a negative bias)"),
    Cause("learning_rate_too_low", "updates too small: the loss falls slowly, in a line",
          "learning_rate", +1),
    Cause("too_few_epochs", "the validation loss was still falling when training stopped",
          "epochs", +1),
    Cause("overfitting", "the model memorizes: validation loss rises after an early minimum "
          "or the train/val gap is large", "capacity", -1),
    Cause("underfitting", "train and validation accuracy both low and equal", "capacity", +1),
    Cause("search_range_edge", "the search's best value sits on its range's edge"),
)}

#: A present cause (key) explains these symptoms: they are its consequences, not new faults.
EXPLAINS: dict[str, tuple[str, ...]] = {
    "output_loss_mismatch": tuple(CAUSES)[1:],
    "scaled_labels": tuple(CAUSES)[2:],
    "unnormalized_inputs": ("learning_rate_too_high", "exploding_gradients", "dead_units",
                            "saturated_units", "vanishing_gradients", "bad_initialization",
                            "learning_rate_too_low", "underfitting", "too_few_epochs"),
    "missing_nonlinearity": ("underfitting", "learning_rate_too_low", "too_few_epochs"),
    "exploding_gradients": ("dead_units", "batch_too_small", "overfitting", "underfitting"),
    "learning_rate_too_high": ("dead_units", "exploding_gradients", "batch_too_small",
                               "overfitting", "underfitting", "saturated_units"),
    # Tiny weights make every update look large next to them (the update/weight ratio).
    "bad_initialization": ("vanishing_gradients", "learning_rate_too_low", "dead_units",
                           "saturated_units", "learning_rate_too_high", "exploding_gradients",
                           "underfitting", "too_few_epochs"),
    "dead_units": ("vanishing_gradients", "underfitting", "learning_rate_too_low"),
    "saturated_units": ("vanishing_gradients", "underfitting", "learning_rate_too_low"),
    "vanishing_gradients": ("learning_rate_too_low", "underfitting", "too_few_epochs"),
    "not_shuffled": ("batch_too_small", "learning_rate_too_high"),
    "batch_too_small": ("learning_rate_too_high",),
    "strong_regularization": ("underfitting", "learning_rate_too_low", "dead_units",
                              "too_few_epochs"),
    "learning_rate_too_low": ("underfitting", "too_few_epochs"),
}


@dataclasses.dataclass(frozen=True)
class Remedy:
    """One candidate fix: config overrides, a model transformation, or both.

    ``change`` holds dotted config fields (``{"optimizer.learning_rate": 0.001}``);
    ``transform`` names a ``models.transform`` function applied to a user's own network
    (a built-in network gets the same fix through ``model.*`` fields instead).
    """

    text: str
    change: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    transform: str = ""

    def flags(self) -> str:
        """The CLI flags for ``change`` (empty for a transformation alone)."""
        return flags_for(self.change)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "change": dict(self.change), "transform": self.transform,
                "flags": self.flags()}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis: the rule that fired, its cause, how bad, the numbers and the fix."""

    code: str  # the rule that fired, e.g. "diverged" (several rules may name one cause)
    severity: str  # "error" | "warning" | "info"
    evidence: str  # one line with the measured numbers
    advice: str  # what to change, in the lecture's words
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    cause: str = ""  # one of CAUSES
    remedies: tuple[Remedy, ...] = ()  # candidates, in the order the repair loop tries them
    explained_by: str = ""  # the winning cause, when this finding is its consequence

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["remedy"] = self.remedies[0].to_dict() if self.remedies else None
        out["remedies"] = [r.to_dict() for r in self.remedies]
        return out


@dataclasses.dataclass(frozen=True)
class Context:
    """What the remedies are computed from: the run's settings and the network's kind."""

    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 10
    train_size: int = 0  # training examples (a batch size is capped by it)
    users_model: bool = False  # a user's network: model fixes are transformations
    activation: str = "relu"  # the built-in network's model.activation
    dropout: float = 0.0
    restore_best: bool = False  # the run keeps its best validation epoch's weights


def _lr(ctx: Context, factor: float) -> dict[str, Any]:
    return {"optimizer.learning_rate": float(f"{ctx.learning_rate * factor:.3g}")}


def _model_fix(ctx: Context, text: str, transform: str, change: Mapping[str, Any]) -> Remedy:
    """A network fix: a transformation of the user's model, or ``model.*`` for a built-in."""
    return Remedy(text, {}, transform) if ctx.users_model else Remedy(text, dict(change))


def remedies(cause: str, ctx: Context = Context()) -> tuple[Remedy, ...]:
    """The candidate fixes for ``cause``, in the order the repair loop tries them.

    Args:
        cause: one of :data:`CAUSES`.
        ctx: the run's settings (the learning rate and batch size the fix scales).

    Returns:
        The remedies; empty when nothing can be changed automatically.

    Raises:
        ValueError: an unknown cause.
    """
    if cause not in CAUSES:
        raise ValueError(f"unknown cause {cause!r}; the causes are {', '.join(CAUSES)}")
    return tuple(_REMEDIES[cause](ctx)) if cause in _REMEDIES else ()


def _batch(ctx: Context) -> list[Remedy]:
    size = min(max(32, 4 * ctx.batch_size), ctx.train_size or 1 << 30)
    return [Remedy(f"batch size {ctx.batch_size} → {size}", {"train.batch_size": size})]


SHORT_RUN_STEPS = 100  # optimizer steps a run needs at the least (the diagnosis: < 50)


def _epochs(ctx: Context) -> list[Remedy]:
    """Twice the epochs, or enough for ``SHORT_RUN_STEPS`` steps (at most 20x the epochs)."""
    per_epoch = -(-ctx.train_size // max(ctx.batch_size, 1)) if ctx.train_size else 0
    need = -(-SHORT_RUN_STEPS // per_epoch) if per_epoch else 0
    more = max(ctx.epochs + 1, 2 * ctx.epochs, min(need, 20 * ctx.epochs))
    return [Remedy(f"train {ctx.epochs} → {more} epochs", {"train.epochs": more})]


def _overfit(ctx: Context) -> list[Remedy]:
    out = [] if ctx.restore_best else [
        Remedy("keep the best validation epoch's weights", {"train.restore_best": True})]
    if not ctx.users_model:
        out.append(Remedy("dropout 0.3 and keep the best epoch",
                          {"model.dropout": max(0.3, ctx.dropout), "train.restore_best": True}))
    return out


#: The lr the lecture's range test finds (``recipes.lr_range.run``, its range's low end):
#: not a model transformation but a measurement the repair loop runs first.
LR_RANGE = Remedy("lr from a learning-rate range test (short runs across decades)", {},
                  "lr_range")

_REMEDIES = {
    # The output matched to the labels: softmax + cross-entropy for one class per example,
    # a sigmoid + binary cross-entropy per label or for one unit on two classes.
    "output_loss_mismatch": lambda ctx: [Remedy(
        "output layer and loss matched to the labels", {"loss.name": "softmax"},
        "fix_output" if ctx.users_model else "")],
    "scaled_labels": lambda ctx: [Remedy("labels back to class ids 0..C-1", {}, "relabel")],
    "unnormalized_inputs": lambda ctx: [Remedy("standardize the inputs (train statistics)",
                                               {"dataset.preprocess": "standardize"})],
    "missing_nonlinearity": lambda ctx: [_model_fix(
        ctx, "a ReLU after every hidden Dense/Conv layer", "add_activations",
        {"model.activation": "relu"})],
    "exploding_gradients": lambda ctx: [
        Remedy("clip the gradient norm at 1 and lower the lr ×10",
               {"optimizer.clipnorm": 1.0, **_lr(ctx, 0.1)}),
        Remedy("clip the gradient norm at 1", {"optimizer.clipnorm": 1.0})],
    "learning_rate_too_high": lambda ctx: [
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate / 10:.3g}", _lr(ctx, 0.1)),
        LR_RANGE,
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate / 100:.3g}", _lr(ctx, 0.01))],
    "bad_initialization": lambda ctx: [_model_fix(
        ctx, "He initialization (Glorot for tanh/sigmoid) with zero biases", "reinitialize",
        {"model.init": "he_normal", "model.bias_init": 0.0})],
    "dead_units": lambda ctx: [
        _model_fix(ctx, "leaky ReLU instead of ReLU, zero biases", "leaky_relu",
                   {"model.activation": "leaky_relu"}),
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate / 10:.3g}", _lr(ctx, 0.1))],
    "saturated_units": lambda ctx: [
        _model_fix(ctx, "batch normalization before each hidden activation", "batchnorm",
                   {"model.norm": "batch"}),
        _model_fix(ctx, "ReLU instead of tanh/sigmoid, He init", "relu",
                   {"model.activation": "relu", "model.init": "he_normal"})],
    "vanishing_gradients": lambda ctx: [
        _model_fix(ctx, "batch normalization before each hidden activation", "batchnorm",
                   {"model.norm": "batch"}),
        _model_fix(ctx, "ReLU instead of tanh/sigmoid, He init", "relu",
                   {"model.activation": "relu", "model.init": "he_normal"})],
    "not_shuffled": lambda ctx: [Remedy("shuffle every epoch", {"train.shuffle": True})],
    "batch_too_small": _batch,
    "strong_regularization": lambda ctx: [_model_fix(
        ctx, "dropout at most 0.5", "cap_dropout", {"model.dropout": min(ctx.dropout, 0.5)})],
    # A loss too flat to say how far off the lr is: measure it first (the lr range test).
    "learning_rate_too_low": lambda ctx: [
        LR_RANGE,
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate * 10:.3g}", _lr(ctx, 10)),
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate * 100:.3g}", _lr(ctx, 100))],
    "too_few_epochs": _epochs,
    "overfitting": _overfit,
    "underfitting": lambda ctx: [
        Remedy(f"lr {ctx.learning_rate:.3g} → {ctx.learning_rate * 3:.3g}", _lr(ctx, 3)),
        *_epochs(ctx)],
}


def flags_for(change: Mapping[str, Any]) -> str:
    """``{"optimizer.learning_rate": 0.001}`` → ``--config.optimizer.learning_rate=0.001``."""
    def value(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if v and (abs(v) < 1e-3 or abs(v) >= 1e4) else repr(v)
        return str(v)
    return " ".join(f"--config.{k}={value(v)}" for k, v in change.items())


def serious(f: Finding) -> bool:
    """An error or a warning that no other finding explains."""
    return f.severity in ("error", "warning") and not f.explained_by


def _rank(cause: str) -> int:
    return list(CAUSES).index(cause) if cause in CAUSES else len(CAUSES)


def resolve(findings: Sequence[Finding]) -> list[Finding]:
    """One verdict from many findings: the documented rule, applied once.

    A finding loses to another when the other, an error, has a cause that explains it
    (:data:`EXPLAINS`: a diverging run's dead units are the lr's doing; a mere warning
    explains nothing, so an independent problem beside it still gets repaired), or when
    both turn one knob opposite ways (raise vs lower the learning rate); the cause earlier
    in :data:`CAUSES` wins. A loser
    keeps its evidence, is marked ``explained_by`` the winner, drops to ``info`` and offers
    no remedy. The result is ordered most serious first: the unexplained errors and
    warnings by cause rank (the most fundamental cause first: dead ReLUs before the flat
    loss they make, whatever each rule's severity), then the information, then the
    explained findings.
    """
    findings = _merge_same_cause(findings)
    winners = [f for f in findings if f.severity in ("error", "warning")]
    out = []
    for f in findings:
        by = _explainer(f, winners)
        if by:
            f = dataclasses.replace(f, explained_by=by, severity="info", remedies=())
        out.append(f)
    return sorted(out, key=lambda f: (bool(f.explained_by), f.severity == "info",
                                      _rank(f.cause), SEVERITIES.index(f.severity)))


def _merge_same_cause(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per cause: the most severe rule's, the others' evidence in ``data["also"]``.

    Several rules often see one cause (a diverging loss, a huge update ratio and an lr
    above its range all say ``learning_rate_too_high``): one problem, more evidence.
    """
    order = sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
    primary: dict[str, Finding] = {}
    also: dict[str, list[str]] = {}
    for f in order:
        if not f.cause or f.cause not in primary:
            primary[f.cause or f"{f.code}#{id(f)}"] = f
            continue
        also.setdefault(f.cause, []).append(f"{f.code}: {f.evidence}")
    return [dataclasses.replace(f, data={**f.data, "also": also[c]}) if c in also else f
            for c, f in primary.items()]


def _explainer(f: Finding, others: Sequence[Finding]) -> str:
    """The cause that explains ``f`` or beats it on a shared knob, if any."""
    me = CAUSES.get(f.cause)
    for o in sorted(others, key=lambda o: _rank(o.cause)):
        if o is f or o.cause == f.cause or _rank(o.cause) >= _rank(f.cause):
            continue
        them = CAUSES.get(o.cause)
        opposite = (me is not None and them is not None and me.knob and me.knob == them.knob
                    and me.direction * them.direction < 0)
        explains = o.severity == "error" and f.cause in EXPLAINS.get(o.cause, ())
        if explains or opposite:
            return o.cause
    return ""


def describe(f: Finding) -> str:
    """One line: cause, evidence and the first remedy with its flags."""
    line = f"{f.cause or f.code}: {f.evidence}"
    if f.data.get("also"):
        line += f" (and {len(f.data['also'])} more sign(s))"
    if f.explained_by:
        return f"{line} (explained by {f.explained_by})"
    if f.remedies:
        r = f.remedies[0]
        line += f" → {r.text}" + (f" ({r.flags()})" if r.change else "")
    return line


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
