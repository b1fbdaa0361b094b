"""Where a value sits in a search range: the one edge rule diagnose and tuning share.

CS231n "Training Neural Networks II": "if your best results are on the edge of your search
range, shift the range". ``recipes.diagnose`` warns about it (``best_at_search_edge``) and
``tuning.narrowing`` shifts the range; both measure the position here, so they never
disagree. Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math

__all__ = ["EDGE_MARGIN", "edge_position", "edge_side"]

EDGE_MARGIN = 0.1  # best within 10 % of the range (in log units for log ranges) of an edge


def edge_position(lo: float, hi: float, value: float, log: bool = False) -> float:
    """Where ``value`` sits in ``[lo, hi]``: 0 at ``lo``, 1 at ``hi`` (log units if ``log``).

    A value outside the range gives a position outside [0, 1].

    Raises:
        ZeroDivisionError: ``lo == hi``.
        ValueError: ``log`` with a value or bound <= 0.
    """
    if log:
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (float(value) - float(lo)) / (float(hi) - float(lo))


def edge_side(position: float, margin: float = EDGE_MARGIN) -> str | None:
    """``"low"`` or ``"high"`` when ``position`` lies within ``margin`` of that edge, else None.

    Args:
        position: from :func:`edge_position`.
        margin: fraction of the range, in [0, 0.5).
    """
    if position < margin:
        return "low"
    if position > 1 - margin:
        return "high"
    return None
