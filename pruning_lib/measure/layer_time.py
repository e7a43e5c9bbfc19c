"""How much inference time sits in layers with coupled channels (DFPC, Narshana et al. 2023, sec. 1).

DFPC's motivation: in a ResNet-50 the conv/linear layers whose input or output channels are coupled
(read from or written to a residual stream) take more than 66 % of CPU inference time, so a method
that only prunes inside blocks leaves most of the time untouched. :func:`coupled_time_share`
measures that share for any model and its :class:`~pruning_lib.graph.ChannelGraph`: each conv
and linear layer is wrapped in a ``torch.profiler`` label (``record_function``) through forward
hooks, the model is profiled over a few forward passes, and the labelled CPU times are summed.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..graph.types import ChannelGraph
from ..layers import handler_for, is_weighted

_PREFIX = "layer_time::"


@dataclass
class CoupledTimeShare:
    """CPU time per forward pass, split by whether a conv/linear layer touches coupled channels."""
    total_ms: float                 # the whole forward pass
    layer_ms: float                 # all conv and linear layers
    coupled_ms: float               # conv/linear layers with coupled channels at input or output
    share: float                    # coupled_ms / total_ms (the paper's "> 66 % for ResNet-50")
    share_of_layers: float          # coupled_ms / layer_ms
    coupled_layers: list[str]
    per_layer_ms: dict[str, float] = field(repr=False, default_factory=dict)
    input_shape: tuple = ()
    threads: int = 1
    repeats: int = 1
    method: str = "profiler"

    def __str__(self) -> str:
        return (f"{self.share:.0%} of {self.total_ms:.1f} ms per forward in {len(self.coupled_layers)} "
                f"conv/linear layers with coupled channels ({self.share_of_layers:.0%} of conv/linear time; "
                f"input {self.input_shape}, {self.threads} threads, {self.method})")


def coupled_layers(model: nn.Module, graph: ChannelGraph) -> list[str]:
    """Conv/linear layers that produce, carry (depthwise) or read the channels of a coupled DFC."""
    names = {r.module for d in graph.dfcs if d.coupled for r in d.feed_in + d.dependent + d.feed_out}
    return [n for n, m in model.named_modules() if n in names and is_weighted(m)]


@dataclass
class CoupledMacShare:
    """Multiply-accumulates per image of all conv/linear layers, and of those with coupled channels:
    the deterministic counterpart of :class:`CoupledTimeShare` (time follows MACs when convs dominate)."""
    macs: int
    coupled_macs: int
    share: float
    per_layer: dict[str, int] = field(repr=False, default_factory=dict)


def layer_macs(model: nn.Module, graph: ChannelGraph) -> dict[str, int]:
    """MACs per image of every conv and linear layer, from the shapes recorded by discovery."""
    out = {}
    for name, m in model.named_modules():
        if not is_weighted(m) or name not in graph.shapes:
            continue
        _, shape_out = graph.shapes[name]
        per_output = handler_for(m).macs_per_output(m)
        n = 1
        for v in shape_out[1:]:
            n *= v
        out[name] = n * per_output
    return out


def coupled_mac_share(model: nn.Module, graph: ChannelGraph) -> CoupledMacShare:
    """Share of conv/linear MACs spent in layers with coupled channels at input or output."""
    macs = layer_macs(model, graph)
    coupled = sum(macs.get(n, 0) for n in coupled_layers(model, graph))
    total = sum(macs.values())
    return CoupledMacShare(total, coupled, coupled / total if total else 0.0, macs)


def coupled_time_share(model: nn.Module, graph: ChannelGraph, input_shape: tuple | None = None,
                       repeats: int = 5, warmup: int = 2, threads: int | None = None,
                       method: Literal["profiler", "hooks"] = "profiler", seed: int = 0) -> CoupledTimeShare:
    """Share of CPU inference time spent in conv/linear layers with coupled channels.

    ``method="profiler"`` labels every conv/linear call with ``torch.profiler.record_function`` and
    reads the labelled CPU totals from ``torch.profiler.profile``; ``"hooks"`` reads a clock in
    forward pre/post hooks instead (no profiler overhead on the unlabelled ops). ``graph`` must be
    ``discover(model, ...)``; ``input_shape`` defaults to a batch of 16 of the graph's input. The model
    is left as it was (hooks removed, train/eval mode restored).
    """
    input_shape = tuple(input_shape) if input_shape is not None else (16,) + tuple(graph.input_shape[1:])
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if method not in ("profiler", "hooks"):
        raise ValueError(f"method must be 'profiler' or 'hooks', got {method!r}")
    layers = {n: m for n, m in model.named_modules() if is_weighted(m)}
    coupled = coupled_layers(model, graph)
    missing = {r.module for d in graph.dfcs for r in d.feed_in + d.feed_out} - set(layers)
    if missing:
        raise ValueError(f"graph does not describe this model (no layers {sorted(missing)[:3]}); "
                         "pass graph=discover(model, input_shape)")
    p = next(model.parameters(), None)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed),
                    dtype=p.dtype if p is not None else torch.float32)
    if p is not None:
        x = x.to(p.device)
    modes = {m: m.training for m in model.modules()}
    old_threads = torch.get_num_threads()
    clock: dict[str, float] = {n: 0.0 for n in layers}
    handles = []
    try:
        if threads:
            torch.set_num_threads(threads)
        model.eval()
        with torch.no_grad():
            for _ in range(warmup):
                model(x)
            if method == "profiler":
                total, per_layer = _profile(model, layers, x, repeats, handles)
            else:
                total, per_layer = _hooks(model, layers, x, repeats, handles, clock)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
        torch.set_num_threads(old_threads)
    layer_ms = sum(per_layer.values())
    coupled_ms = sum(per_layer[n] for n in coupled)
    return CoupledTimeShare(total_ms=total, layer_ms=layer_ms, coupled_ms=coupled_ms,
                            share=coupled_ms / total if total else 0.0,
                            share_of_layers=coupled_ms / layer_ms if layer_ms else 0.0,
                            coupled_layers=coupled, per_layer_ms=per_layer, input_shape=tuple(input_shape),
                            threads=threads or old_threads, repeats=repeats, method=method)


def _profile(model, layers, x, repeats, handles) -> tuple[float, dict[str, float]]:
    from torch.profiler import ProfilerActivity, profile, record_function
    open_labels: dict[int, list] = {}

    def pre(name):
        def hook(mod, args):
            rf = record_function(_PREFIX + name)
            rf.__enter__()
            open_labels.setdefault(id(mod), []).append(rf)
        return hook

    def post(mod, args, out):
        open_labels[id(mod)].pop().__exit__(None, None, None)

    for n, m in layers.items():
        handles.append(m.register_forward_pre_hook(pre(n)))
        handles.append(m.register_forward_hook(post))
    prof = profile(activities=[ProfilerActivity.CPU])
    with _quiet_stderr():                    # kineto logs "profiler_start/stop" lines on fd 2
        prof.__enter__()
    try:
        for _ in range(repeats):
            with record_function(_PREFIX + "<forward>"):
                model(x)
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    times = {e.key: e.cpu_time_total for e in prof.key_averages()}       # microseconds, inclusive
    total = times.get(_PREFIX + "<forward>", 0.0) / repeats / 1e3
    per_layer = {n: times.get(_PREFIX + n, 0.0) / repeats / 1e3 for n in layers}
    return total, per_layer


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to file descriptor 2 (only around the profiler's start and stop)."""
    fd = 2                                   # C code writes here, whatever sys.stderr is
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _hooks(model, layers, x, repeats, handles, clock) -> tuple[float, dict[str, float]]:
    started: dict[int, list[float]] = {}

    def pre(mod, args):
        started.setdefault(id(mod), []).append(time.perf_counter())

    def post(name):
        def hook(mod, args, out):
            clock[name] += time.perf_counter() - started[id(mod)].pop()
        return hook

    for n, m in layers.items():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post(n)))
    t = time.perf_counter()
    for _ in range(repeats):
        model(x)
    total = (time.perf_counter() - t) / repeats * 1e3
    return total, {n: clock[n] / repeats * 1e3 for n in layers}


__all__ = ["CoupledMacShare", "CoupledTimeShare", "coupled_layers", "coupled_mac_share", "coupled_time_share",
           "layer_macs"]
