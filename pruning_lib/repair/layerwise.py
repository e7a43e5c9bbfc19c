"""Running a traced network node by node over every calibration batch at once.

A sequential compensation (ModHiFi, Kashyap et al., NeurIPS 2025, section D.2) refits each reader on
the input its already-compensated upstream produces. Done with hooks that is one forward pass per
reader; done here it is one pass in all: the network's ``torch.fx`` graph is executed node by node on
all batches, each activation freed after its last use, and the run pauses before a reader so it can
be refitted before it runs. The price is memory: the live activations of every calibration sample.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
from torch import nn

from ..graph.tracing import trace

__all__ = ["NodeRunner", "LayerwiseUnavailable"]


class LayerwiseUnavailable(Exception):
    """The network cannot be run node by node (not traceable, or a reader is not one module call)."""


class _Batches:
    """One value per calibration batch (a node's output on every batch); not a list, so that
    ``torch.fx``'s argument mapping treats it as one value."""

    def __init__(self, values):
        self.values = list(values)

    def __getitem__(self, i: int):
        return self.values[i]

    def __len__(self) -> int:
        return len(self.values)


def _has_batches(a) -> bool:
    found = []
    torch.fx.node.map_aggregate(a, lambda v: found.append(1) if isinstance(v, _Batches) else None)
    return bool(found)


def _pick(a, i: int):
    return torch.fx.node.map_aggregate(a, lambda v: v[i] if isinstance(v, _Batches) else v)


class NodeRunner:
    """``model``'s traced graph executed on ``batches`` (a list of input tensors) up to a chosen
    module call; the traced graph shares ``model``'s modules, so a refitted weight is what later
    nodes read. ``readers``: the module names the run will pause at (each must be called once)."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor], readers: list[str]):
        try:
            self.gm = trace(model)
        except Exception as e:  # noqa: BLE001 -- any tracing failure means: use the per-reader passes
            raise LayerwiseUnavailable(str(e)) from e
        self.nodes = list(self.gm.graph.nodes)
        calls: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            if n.op == "call_module":
                calls.setdefault(n.target, []).append(i)
        bad = [r for r in readers if len(calls.get(r, [])) != 1]
        if bad:
            raise LayerwiseUnavailable(f"{bad[:3]} not called exactly once in the traced graph")
        self.at = {r: calls[r][0] for r in readers}
        last: dict[torch.fx.Node, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                last[a] = i
        self.last = last
        self.env: dict[torch.fx.Node, object] = {}
        self.batches = _Batches(batches)
        self.next = 0
        self._fed = False

    def order(self) -> list[str]:
        """The readers in execution (graph) order."""
        return sorted(self.at, key=self.at.get)

    def _run(self, i: int) -> None:
        n = self.nodes[i]
        if n.op == "placeholder":
            value = self.batches if not self._fed else (n.args[0] if n.args else None)
            self._fed = True
        elif n.op == "get_attr":
            value = operator.attrgetter(n.target)(self.gm)
        elif n.op == "output":
            value = None
        else:
            args = torch.fx.node.map_arg(n.args, self.env.__getitem__)
            kwargs = torch.fx.node.map_arg(n.kwargs, self.env.__getitem__)
            if n.op == "call_module":
                fn = self.gm.get_submodule(n.target)
            elif n.op == "call_function":
                fn = n.target
            else:
                def fn(obj, *rest, _name=n.target, **kw):
                    return getattr(obj, _name)(*rest, **kw)
            if _has_batches(args) or _has_batches(kwargs):
                value = _Batches(fn(*_pick(args, b), **_pick(kwargs, b)) for b in range(len(self.batches)))
            else:
                value = fn(*args, **kwargs)
        self.env[n] = value
        for a in n.all_input_nodes:
            if self.last.get(a) == i:
                del self.env[a]

    @torch.no_grad()
    def input_of(self, reader: str) -> list[torch.Tensor]:
        """Run every node before ``reader``'s call; its input on every batch."""
        stop = self.at[reader]
        if self.next > stop:
            raise ValueError(f"{reader} has already run; ask for readers in execution order ({self.order()})")
        while self.next < stop:
            self._run(self.next)
            self.next += 1
        x = self.env[self.nodes[stop].args[0]]
        return x.values if isinstance(x, _Batches) else [x] * len(self.batches)

    @torch.no_grad()
    def output_of(self, reader: str) -> list[torch.Tensor]:
        """Run the nodes up to and including ``reader``'s call; its output on every batch."""
        stop = self.at[reader]
        if self.next > stop:
            raise ValueError(f"{reader} has already run; ask for readers in execution order ({self.order()})")
        while self.next <= stop:
            self._run(self.next)
            self.next += 1
        y = self.env[self.nodes[stop]]
        return y.values if isinstance(y, _Batches) else [y] * len(self.batches)
