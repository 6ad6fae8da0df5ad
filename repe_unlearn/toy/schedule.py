"""The learning rate of `toy pretrain`: warm up, hold the peak until the facts are nearly known, then decay.

Training until learned has no length known in advance. A cosine over a guessed horizon either stops at a high
rate or decays too early and restarts at the peak, which unlearns part of what the decay had settled. Here
(warm-up, stable, decay) the rate stays at its peak until the checks say the facts are nearly known (the lowest
set within ``NEAR`` of the target) or stop improving (``PATIENCE`` checks without a gain), then falls linearly to
a tenth of the peak over ``decay_fraction`` times the steps run so far. A decay that ends short of the target but within
``NEAR`` of it holds the low rate for as long again; otherwise a new stable phase begins (with its warm-up).
`pretrain` compares the end of each round (the peak, its decay and any hold) with the one before to call a
plateau.
"""

import math

from .config import PretrainConfig

NEAR = 0.1  # a check this close to the target starts the decay
PATIENCE = 6  # checks without a gain at the peak rate that start the decay
SETTLE = 4  # checks a new stable phase runs before being near the target can start its decay
MIN_DECAY = 50  # steps of the shortest decay
FLOOR = 0.1  # the lowest multiple of the peak rate


class Schedule:
    """The learning rate's multiple of the peak at each step. With ``config.steps`` set: one cosine cycle of
    that many steps down to ``FLOOR``, after a warm-up of ``warmup`` steps, at most a tenth of them. Otherwise
    the phases above, moved on by `observe` and `phase_ended`; the factor of a step depends only on the phase
    it falls in."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.phase = "stable"  # "stable", "decay" or "hold"
        self.start = 0  # the first step of the current phase
        self.length = 0  # the steps of a decay or hold
        self.checks = 0  # checks observed in the current stable phase
        self.since_gain = 0  # of which, since the best score so far gained
        self.best: float | None = None
        self.top = 1.0  # the rate a decay starts from

    def factor(self, step: int) -> float:
        config = self.config
        if config.steps is not None:
            warmup = min(config.warmup, config.steps // 10)
            warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
            t = min(step, config.steps) / config.steps
            return warm * (FLOOR + (1 - FLOOR) / 2 * (1 + math.cos(math.pi * t)))
        if self.phase == "stable":
            return min(1.0, (step - self.start + 1) / config.warmup) if config.warmup else 1.0
        if self.phase == "decay":  # from the rate it began at (the peak) down to FLOOR
            return self.top - (self.top - FLOOR) * min(1.0, (step - self.start) / self.length)
        return FLOOR

    def phase_ends(self, step: int) -> bool:
        """Whether a decay or hold ends with ``step`` (counted from 0)."""
        return self.config.steps is None and self.phase != "stable" and step + 1 >= self.start + self.length

    def observe(self, step: int, gained: bool, near: bool) -> None:
        """A check after ``step`` in the stable phase once its warm-up is over (ignored otherwise): whether the
        score gained on the best so far in this phase, and whether it is near the target. Either starts the
        decay."""
        if self.config.steps is not None or self.phase != "stable" or step + 1 < self.start + self.config.warmup:
            return  # only checks at the peak count, once the warm-up is over
        self.checks += 1
        self.since_gain = 0 if gained else self.since_gain + 1
        if (near and self.checks >= SETTLE) or self.since_gain >= PATIENCE:
            self.top = max(FLOOR, self.factor(step + 1))  # the peak: a decay never raises the rate
            self.phase, self.start = "decay", step + 1
            self.length = max(MIN_DECAY, round(self.config.decay_fraction * (step + 1)))

    def round_ends(self, near: bool) -> bool:
        """Whether the decay or hold ending now, short of the target, ends a round (the peak, its decay and any
        hold): anything but a decay that came ``near`` and will hold."""
        return not (self.phase == "decay" and near)

    def phase_ended(self, step: int, near: bool) -> None:
        """A decay or hold ended with ``step`` short of the target: hold the low rate after a decay that came
        ``near``, else begin a new stable phase."""
        if self.phase == "decay" and near:
            self.phase, self.start = "hold", step + 1
        else:
            self.phase, self.start, self.checks, self.since_gain, self.best = "stable", step + 1, 0, 0, None

    def gained(self, score: float, by: float) -> bool:
        """Whether ``score`` (higher is better) beats the best of this stable phase by more than ``by``; it
        becomes the best if so."""
        if self.best is None or score > self.best + by:
            self.best = score
            return True
        return False
