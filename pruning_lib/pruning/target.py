"""When to stop pruning: one vocabulary for both methods, every fraction a fraction REMOVED.

``Target(parameters=0.5)`` removes half of the parameters (a sparsity of 0.5, TVSPrune's
vocabulary); ``Target(channels=0.3)`` removes at most 30 % of the eligible channels. Global pruning
(DFPC) reads ``parameters``, ``flops``, ``channels``, ``speedup`` and ``accuracy_drop``; IterTVSPrune
reads ``parameters``, ``accuracy_drop`` and ``min_accuracy``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

_REMOVED = ("parameters", "flops")


@dataclass(frozen=True)
class Target:
    """When to stop. ``parameters``/``flops``: fraction of the unpruned count to remove, in [0, 1);
    ``channels``: fraction of the eligible channels to remove at most, in (0, 1]; ``speedup``:
    measured latency speedup to reach (>= 1); ``accuracy_drop``: the most accuracy (points) that may
    be lost; ``min_accuracy``: an accuracy floor (%). None: no such limit."""
    parameters: float | None = None
    flops: float | None = None
    channels: float | None = None
    speedup: float | None = None
    accuracy_drop: float | None = None
    min_accuracy: float | None = None
    # the exact kept fractions a PruningTarget was given (so its comparisons stay bit for bit)
    _kept: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self):
        for name in _REMOVED:
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ValueError(f"Target.{name}={v!r}: give the fraction to REMOVE in [0, 1), e.g. 0.5 "
                                 f"for half of the {name}")
        if self.channels is not None and not 0 < self.channels <= 1:
            raise ValueError(f"Target.channels={self.channels}: give the fraction of channels to remove "
                             "in (0, 1], e.g. 0.5")
        if self.speedup is not None and self.speedup < 1:
            raise ValueError(f"Target.speedup={self.speedup}: a speedup target is at least 1")
        if self.accuracy_drop is not None and self.accuracy_drop < 0:
            raise ValueError(f"Target.accuracy_drop={self.accuracy_drop}: give points of accuracy >= 0")

    def kept(self, name: str) -> float | None:
        """The fraction of ``parameters`` or ``flops`` to keep (1 - the fraction removed), or None."""
        exact = dict(self._kept)
        if name in exact:
            return exact[name]
        v = getattr(self, name)
        return None if v is None else 1.0 - v

    @property
    def needs_accuracy(self) -> bool:
        """Whether reaching this target needs an accuracy measure (an evaluation source)."""
        return self.accuracy_drop is not None or self.min_accuracy is not None


def PruningTarget(parameters: float | None = None, flops: float | None = None, speedup: float | None = None,
                  accuracy_drop: float | None = None, channels: float | None = None) -> Target:
    """The course's earlier spelling of a :class:`Target`, where ``parameters``/``flops`` are the
    fractions to KEEP (in (0, 1]); ``PruningTarget(parameters=0.3)`` is ``Target(parameters=0.7)``."""
    for name, v in (("parameters", parameters), ("flops", flops), ("channels", channels)):
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"PruningTarget.{name}={v}: give a fraction in (0, 1], e.g. 0.5")
    kept = tuple((k, v) for k, v in (("parameters", parameters), ("flops", flops)) if v is not None)
    return Target(parameters=None if parameters is None else 1.0 - parameters,
                  flops=None if flops is None else 1.0 - flops, channels=channels, speedup=speedup,
                  accuracy_drop=accuracy_drop, _kept=kept)


__all__ = ["Target", "PruningTarget"]
