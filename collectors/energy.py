"""Energy per interval from NVML's cumulative millijoule counter.

The counter is the truth, but it can go backwards (driver reload, GPU reset) and
observations can be missing (collector stalled, GPU unreadable). In both cases we
attribute only energy actually measured inside the interval and count the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER_MODULUS = 2**64
WRAP_ZONE = 2**40  # a backwards step from within this distance of 2**64 is a wrap, not a reset


@dataclass
class EnergyStep:
    """What one new counter reading means for the current interval."""

    joules: float  # attributed to the interval
    unattributed_joules: float = 0.0  # measured but spanning time outside the interval
    reset: bool = False  # counter went backwards: nothing attributed for this step
    wrapped: bool = False


@dataclass
class EnergyMeter:
    """Tracks one device's counter between observations."""

    last_mj: int | None = None
    last_t: float | None = None

    def observe(self, counter_mj: int, t: float, interval_start: float) -> EnergyStep:
        """Feed a reading taken at ``t``; returns the joules that belong to the interval starting at ``interval_start``."""
        prev_mj, prev_t = self.last_mj, self.last_t
        self.last_mj, self.last_t = counter_mj, t
        if prev_mj is None or prev_t is None or t <= prev_t:
            return EnergyStep(0.0)
        wrapped = False
        if counter_mj >= prev_mj:
            delta_mj = counter_mj - prev_mj
        elif prev_mj >= COUNTER_MODULUS - WRAP_ZONE:
            delta_mj, wrapped = COUNTER_MODULUS - prev_mj + counter_mj, True
        else:
            return EnergyStep(0.0, reset=True)
        joules = delta_mj / 1000.0
        if prev_t >= interval_start:
            return EnergyStep(joules, wrapped=wrapped)
        # The step spans time before this interval (missed observations): keep only the in-interval share.
        inside = max(0.0, t - interval_start) / (t - prev_t)
        return EnergyStep(joules * inside, unattributed_joules=joules * (1 - inside), wrapped=wrapped)

    def forget(self) -> None:
        """Drop the baseline (device unreadable): the next reading starts fresh instead of spanning the gap."""
        self.last_mj = self.last_t = None
