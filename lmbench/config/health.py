"""The matrix's ``[health]`` table: thresholds of the health verdict (``lmbench.evaluate.health``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval, Lt

from lmbench.core.params import NonNegativeFloat, PositiveInt


@dataclass(frozen=True)
class HealthSettings:
    """The matrix's ``[health]`` table: the thresholds of each check (none is keyed)."""

    curve_tail: Annotated[float, Interval(gt=0, le=1)] = 0.1
    # relative margins below chance; 1 or more would flag everything, below 0 accepts a loss above chance
    curve_tolerance: Annotated[float, Lt(1)] = 0.05
    min_spread_ratio: NonNegativeFloat = 0.5
    held_out_tolerance: Annotated[float, Lt(1)] = 0.05
    still_improving: bool = True
    min_prediction_spread: NonNegativeFloat = 1.0  # input pixels
    probe_images: PositiveInt = 64  # pool images the spread is measured on
