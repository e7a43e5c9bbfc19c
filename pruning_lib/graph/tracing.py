"""Tracing a model with ``torch.fx`` and propagating its shapes from an example input.

Shapes are computed on the ``meta`` device (no arithmetic) where possible; modules torch.fx cannot
trace can be kept opaque (``leaf_modules``), and layers whose channels must stay whole (parametrised,
tied, read directly by the graph) are found here with the reason.
"""
from __future__ import annotations

import operator
import traceback
from typing import Any, Iterable

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from ..layers import is_batchnorm, is_user_type
from .types import UntraceableModelError

class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaves: tuple):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_user_type(m):             # a layer type taught with register_handler: its handler answers
            return True
        if qualname in self.leaves or (self.leaves and isinstance(m, tuple(x for x in self.leaves
                                                                          if isinstance(x, type)))):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}, in {f.name}: `{(f.line or '').strip()}`)"


def _refuse_wrapper(model: nn.Module) -> None:
    """DataParallel / DistributedDataParallel and torch.compile wrap the model to prune: name it."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise UntraceableModelError(f"{type(model).__name__} wraps the network to prune: pass model.module "
                                    "(discover, prune and the criteria work on the network itself; wrap the "
                                    "pruned model again afterwards)")
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise UntraceableModelError("a torch.compile'd model wraps the network to prune: pass model._orig_mod "
                                    "(and compile the pruned model afterwards)")


def _check_inputs(model: nn.Module, graph: torch.fx.Graph) -> None:
    """discover feeds ONE tensor: refuse a forward that needs several inputs or reads a dict."""
    ph = [n for n in graph.nodes if n.op == "placeholder"]
    required = [n.target for n in ph if not n.args]
    name = type(model).__name__
    fix = (f"wrap it in a module whose forward(x) takes one tensor and builds the rest inside (e.g. "
           f"class Wrapped(nn.Module): forward(self, x): return net(x, ...)); discover, prune and the "
           "criteria then work on the wrapper")
    if len(required) > 1:
        raise UntraceableModelError(f"{name}.forward takes {len(required)} inputs ({', '.join(required)}), but "
                                    f"discover traces models called with one tensor: {fix}")
    for p in ph[:1]:
        for u in p.users:
            if (u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], str)) or \
                    (u.op == "call_method" and u.target in ("get", "keys", "values", "items")):
                raise UntraceableModelError(f"{name}.forward reads its input {p.target!r} as a dict, but discover "
                                            f"traces models called with one tensor: {fix}")


def trace(model: nn.Module, leaf_modules: Iterable = ()) -> torch.fx.GraphModule:
    """``torch.fx`` trace of ``model``; a clear error when Python control flow defeats tracing, for a
    wrapped model (DataParallel, torch.compile) and for a forward that takes several inputs."""
    _refuse_wrapper(model)
    tracer = _LeafTracer(tuple(leaf_modules))
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}{_user_frame(e)}. "
            "Usually a forward() branches or loops on tensor values or shapes. Make that code "
            "independent of tensor values, or pass the submodule that contains it in "
            "leaf_modules=[...] (its channels are then kept whole, marked unprunable).") from e
    _check_inputs(model, graph)
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)



def frozen_modules(model: nn.Module, gm: torch.fx.GraphModule, leaves: tuple) -> dict[str, str]:
    """Modules whose channels must stay whole, with the reason: those named in ``leaf_modules``,
    those whose weight is computed (parametrisations, the old weight_norm/spectral_norm hooks),
    those sharing (tying) a parameter with another module, and those whose parameters the graph
    reads directly (``get_attr``): surgery would slice a tensor another reader expects whole."""
    names = {x for x in leaves if isinstance(x, str)}
    types = tuple(x for x in leaves if isinstance(x, type))
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        mname = pname.rpartition(".")[0]
        owners.setdefault(id(p), []).append((pname, model.get_submodule(mname)))
    tied: dict[int, str] = {}
    for holders in owners.values():
        if len({id(m) for _, m in holders}) > 1:
            for pname, m in holders:
                others = ", ".join(q for q, o in holders if o is not m)
                tied.setdefault(id(m), f"{pname} is tied to {others} (one shared Parameter): pruning "
                                       "would untie them")
    direct = {n.target.rpartition(".")[0] for n in gm.graph.nodes if n.op == "get_attr"}
    out = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name in names or (types and isinstance(m, types)):
            out[name] = f"module {name} ({type(m).__name__}) is named in leaf_modules: kept whole"
        elif torch.nn.utils.parametrize.is_parametrized(m):
            out[name] = (f"module {name} ({type(m).__name__}) is parametrised (e.g. weight_norm, "
                         "spectral_norm): remove the parametrisation first "
                         "(torch.nn.utils.parametrize.remove_parametrizations) to prune it")
        elif any(f"{p}_orig" in m._parameters and f"{p}_mask" in m._buffers for p in ("weight", "bias")):
            out[name] = (f"module {name} ({type(m).__name__}) carries a torch.nn.utils.prune mask (weight = "
                         "weight_orig * weight_mask): make it permanent first with "
                         f"torch.nn.utils.prune.remove(module, 'weight') to prune its channels")
        elif "weight" not in m._parameters and isinstance(getattr(m, "weight", None), torch.Tensor):
            out[name] = (f"module {name} ({type(m).__name__}) computes its weight in a hook (old "
                         "nn.utils.weight_norm / spectral_norm): remove it first "
                         "(nn.utils.remove_weight_norm / remove_spectral_norm) to prune it")
        elif id(m) in tied:
            out[name] = f"module {name}: {tied[id(m)]}"
        elif name and name in direct:
            out[name] = f"the parameters of module {name} are also read directly by the graph"
        elif name and _hooked(m):
            out[name] = (f"module {name} ({type(m).__name__}) has forward hooks or pre-hooks, which may change "
                         "its inputs or outputs in ways the traced graph does not show: kept whole; remove "
                         "the hooks (handle.remove()) to prune it")
    for name in [n for n in out if n and _hooked(model.get_submodule(n))]:
        for sub, m in model.get_submodule(name).named_modules(prefix=name):      # a hooked container:
            out.setdefault(sub, f"module {sub} is inside {name}, which has forward hooks: kept whole")
    return out


def _hooked(m: nn.Module) -> bool:
    """Whether ``m`` carries forward hooks or forward pre-hooks (the root's hooks only touch the
    network's input and output, which are never pruned, so discover ignores those)."""
    return bool(m._forward_hooks or m._forward_pre_hooks)


def propagate_shapes(gm: torch.fx.GraphModule, x: torch.Tensor) -> None:
    """Record every node's output shape in ``node.meta["tensor_meta"]``.

    First on the ``meta`` device: every parameter, buffer and the input are swapped for
    storage-less meta tensors, so only shapes are computed (a ResNet-101 at 224x224 in about a
    tenth of a second, nothing real is touched or copied). Real tensors are the fallback for models
    whose ops have no meta implementation or that read tensor values (leaf modules with control
    flow); its error, if any, is the one reported."""
    try:
        _Shapes(gm, meta=True).run(x.to("meta"))
        return
    except Exception:
        for n in gm.graph.nodes:
            n.meta.pop("tensor_meta", None)
    _Shapes(gm, meta=False).run(x)


_SHAPE_PRESERVING = {nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.Identity,
                     nn.Dropout, nn.SiLU, nn.Hardswish, nn.Sigmoid}


def _meta(t):
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


class ShapeError(RuntimeError):
    """Running the traced graph failed at one node (the message names it)."""


class _Shapes(torch.fx.Interpreter):
    """Runs a traced graph without gradients, storing each node's tensor metadata as ShapeProp
    does. ``meta=True``: on meta tensors (parameters and buffers swapped per call)."""

    def __init__(self, gm: torch.fx.GraphModule, meta: bool):
        super().__init__(gm)
        self.meta = meta
        self.extra_traceback = False

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            with torch.no_grad():
                result = super().run_node(n)
        except ShapeError:
            raise
        except Exception as e:
            where = (f"module {n.target!r} ({type(self.fetch_attr(n.target)).__name__})" if n.op == "call_module"
                     else f"{getattr(n.target, '__name__', n.target)} (graph node {n.name!r})")
            raise ShapeError(f"at {where}: {type(e).__name__}: {e}") from e
        found = False

        def extract(obj):
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return _extract_tensor_metadata(obj)
            return obj

        meta = torch.fx.node.map_aggregate(result, extract)
        if found:
            n.meta["tensor_meta"] = meta
        return result

    def call_module(self, target, args, kwargs):
        submod = self.fetch_attr(target)
        if not self.meta:
            return submod(*args, **kwargs)
        x = args[0] if args else None
        if type(submod) in _SHAPE_PRESERVING and isinstance(x, torch.Tensor) and len(args) == 1 and not kwargs:
            if is_batchnorm(submod) and (x.dim() < 2 or x.shape[1] != submod.num_features):
                raise ValueError(f"{target} expects {submod.num_features} channels, got input {tuple(x.shape)}")
            return torch.empty_like(x)          # BN, activations: the meta kernels are slow decompositions
        state = {k: _meta(v) for k, v in submod.named_parameters()}
        state.update({k: _meta(v) for k, v in submod.named_buffers()})
        return torch.func.functional_call(submod, state, tuple(args), dict(kwargs))

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        return _meta(value) if self.meta else value



__all__ = ["trace", "propagate_shapes", "frozen_modules", "ShapeError"]
