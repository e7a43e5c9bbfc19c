"""Wall-clock latency of models as they really are, and the speedups it measures.

Speedups in this course are measured, never inferred from FLOPs: :func:`compare_latency` times
several models interleaved in one run (so a busy machine slows them alike) and :func:`speedups`
divides the baseline's median latency by each model's. The protocol follows DFPC's (Narshana et
al., 2023): forward pass only, random inputs, batch 64 on a CPU, warm-up passes first, device
synchronised before the clock is read on a GPU; we report the median and quartiles rather than the
mean, which is robust to the odd slow pass on a shared machine.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..modes import eval_mode, unmaterialised
from ..sources import input_shape_for
from .counts import example_input


@dataclass(frozen=True)
class LatencyResult:
    """Forward-pass wall time of one model: median and quartiles over ``repeats`` timed passes, and
    the mean (DFPC's GPU protocol reports the mean of 1,000 synchronised passes)."""
    median_ms: float
    q1_ms: float
    q3_ms: float
    batch_size: int
    threads: int
    device: str
    repeats: int
    mean_ms: float | None = None

    def __str__(self) -> str:
        return (f"{self.median_ms:.2f} ms (IQR {self.q1_ms:.2f}-{self.q3_ms:.2f}) for a batch of "
                f"{self.batch_size} on {self.device}, {self.threads} threads, {self.repeats} passes")


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _result(times: list[float], batch: int, threads: int, device: torch.device) -> LatencyResult:
    ms = sorted(t * 1000 for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return LatencyResult(round(statistics.median(ms), 4), round(q[0], 4), round(q[2], 4), batch, threads,
                         str(device), len(ms), round(statistics.fmean(ms), 4))


def compare_latency(models: dict[str, nn.Module], input_shape: tuple | None = None, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None, device: str | torch.device = "cpu"
                    ) -> dict[str, LatencyResult]:
    """Time several models in one run, interleaved pass by pass, so that they share the machine's
    state (load, clock, caches) and their ratios are fair. Each model runs in eval mode on
    ``device``; the caller's models are left as they were: a model on another device is timed as a
    copy moved there, and every submodule's train/eval mode is restored."""
    input_shape = input_shape_for(input_shape, None, "compare_latency(models, input_shape)")
    device = torch.device(device)
    if not models:
        raise ValueError("compare_latency needs at least one model")
    times: dict[str, list[float]] = {k: [] for k in models}
    with contextlib.ExitStack() as stack, _threads(threads) as n_threads, torch.inference_mode():
        timed = {}
        for k, m in models.items():
            m = unmaterialised(m)
            here = _device_of(m)
            if here.type != device.type or (None not in (here.index, device.index) and here.index != device.index):
                m = copy.deepcopy(m).to(device)
            timed[k] = stack.enter_context(eval_mode(m))
        x = example_input(next(iter(timed.values())), input_shape, device)
        for _ in range(warmup):
            for m in timed.values():
                m(x)
        _sync(device)
        for _ in range(repeats):
            for k, m in timed.items():
                _sync(device)
                t0 = time.perf_counter()
                m(x)
                _sync(device)
                times[k].append(time.perf_counter() - t0)
    return {k: _result(t, input_shape[0], n_threads, device) for k, t in times.items()}


def _device_of(m: nn.Module) -> torch.device:
    t = next(m.parameters(), None)
    if t is None:
        t = next(m.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def measure_latency(model: nn.Module, input_shape: tuple | None = None, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None, device: str | torch.device = "cpu"
                    ) -> LatencyResult:
    """Forward-pass latency of one model at ``input_shape`` (a batch, e.g. (64, 3, 32, 32); see
    :func:`compare_latency` for the protocol)."""
    return compare_latency({"model": model}, input_shape, warmup, repeats, threads, device)["model"]


def speedups(results: dict[str, LatencyResult], baseline: str, statistic: str = "median") -> dict[str, float]:
    """Measured speedup of every model over ``baseline``: latency ratio (of the medians, or of the
    means with ``statistic="mean"``), same run."""
    if baseline not in results:
        raise KeyError(f"baseline {baseline!r} is not among the measured models {list(results)}")
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic={statistic!r}: choose 'median' or 'mean'")
    key = f"{statistic}_ms"
    base = getattr(results[baseline], key)
    return {k: base / getattr(r, key) for k, r in results.items()}


__all__ = ["LatencyResult", "measure_latency", "compare_latency", "speedups"]
