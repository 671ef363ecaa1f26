"""Summaries of measured samples shared by the benchmarks and their load generators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float, digits: int | None = None) -> float | None:
    """The ``q``-th percentile (0-100; numpy's linear interpolation) of ``values``, rounded to ``digits`` when given;
    None when there are no values."""
    if len(values) == 0:
        return None
    found = float(np.percentile(values, q))
    return found if digits is None else round(found, digits)
