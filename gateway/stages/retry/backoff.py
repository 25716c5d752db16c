"""Exponential backoff with full jitter: uniform(0, min(max_delay, base_delay · 2^n)) before
the n-th retry (the AWS Architecture Blog's "full jitter"). Randomness is injected."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_delay_s: float
    max_delay_s: float
    rng: random.Random

    def delay(self, retry_number: int) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**retry_number)
        return self.rng.uniform(0, ceiling)
