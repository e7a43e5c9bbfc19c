"""Prune to a target and repair every step without the training set (ModHiFi-P's procedure,
Kashyap et al., NeurIPS 2025, section 4 and D.2, on the library's global pruning).

The channels are ordered once by a criterion on the unpruned model (as DFPC's global pruning does:
:func:`pruning_lib.pruning.removal_order`); step n removes the first n x ``step_fraction`` of them
from the unpruned model, physically, then repairs the result against the unpruned model:
compensation of every reader of removed channels (:mod:`.compensation`, Proposition 3.8 and the
least-squares refit), then BatchNorm re-estimation (:func:`pruning_lib.bn_recalibrate`, the paper's
"BN update" of section 5.4.1; the running means only unless ``bn_variance``), both on the same
unlabelled ``data`` (real held-out images, a course split, or images from
:func:`~pruning_lib.repair.synthesis.synthesize_images`). Each step is repaired
from the unpruned model afresh, so the steps of runs with different repairs are the same prunings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..graph import ChannelGraph
from ..legacy import earlier_positions
from ..pruning import GlobalPruningResult, Target, bn_recalibrate, global_prune
from ..pruning.global_pruning import criterion_first
from ..scoring import ChannelScores
from ..surgery import prune
from .compensation import LayerCompensation, compensate
from .inputs import iter_inputs

__all__ = ["REPAIRS", "RepairResult", "repair_pruned", "prune_and_repair"]

REPAIRS = ("bn", "compensation")


@dataclass
class RepairResult(GlobalPruningResult):
    """A :func:`prune_and_repair` run: a :class:`~pruning_lib.GlobalPruningResult` whose steps were
    repaired (``model_at`` rebuilds a step unrepaired), plus the repairs applied and, per step, the
    compensation records (empty without compensation)."""
    repairs: tuple[str, ...] = ()
    compensation: dict[int, list[LayerCompensation]] = field(default_factory=dict, repr=False)


def _check_repairs(repairs) -> tuple[str, ...]:
    if isinstance(repairs, str):
        repairs = (repairs,)
    repairs = tuple(repairs)
    bad = [r for r in repairs if r not in REPAIRS]
    if bad:
        raise ValueError(f"repairs={repairs!r}: {bad} unknown; choose any of {REPAIRS}, e.g. ('bn', 'compensation') "
                         "or () for none")
    return repairs


def _bn_source(data):
    """``data`` as (inputs, labels) batches for :func:`bn_recalibrate`, which reads only the inputs (a
    tensor of inputs gets placeholder labels 0)."""
    if isinstance(data, torch.Tensor):
        return torch.utils.data.DataLoader(TensorDataset(data, torch.zeros(len(data), dtype=torch.long)),
                                           batch_size=250)
    return data


def repair_pruned(base: nn.Module, graph: ChannelGraph, removals, data, *, repairs=REPAIRS,
                  method: str = "auto", ridge: float = 1e-4, sequential: bool = True, samples: int | None = None,
                  batch_size: int = 250, bn_variance: bool = False,
                  bn_kwargs: dict | None = None) -> tuple[nn.Module, list[LayerCompensation]]:
    """``prune(base, graph, removals)`` repaired: compensation against ``base`` (if in ``repairs``),
    then BatchNorm re-estimation (if in ``repairs``): the running means, and the variances too only with
    ``bn_variance`` (re-estimated variances scale a pruned layer's surviving signal back up, see
    :func:`bn_recalibrate`); ``bn_kwargs`` go to :func:`bn_recalibrate`. Returns the repaired model (in
    eval mode) and the compensation records. ``base`` is not modified."""
    return _repaired(prune(base, graph, removals), base, graph, removals, data, repairs=_check_repairs(repairs),
                     method=method, ridge=ridge, sequential=sequential, samples=samples, batch_size=batch_size,
                     bn_kwargs=_bn_settings(bn_variance, bn_kwargs))


def _bn_settings(bn_variance: bool, bn_kwargs: dict | None) -> dict:
    """:func:`bn_recalibrate`'s keywords: ``bn_kwargs`` with ``variance=bn_variance`` (one place to say it)."""
    kwargs = dict(bn_kwargs or {})
    if "variance" in kwargs and kwargs["variance"] != bn_variance:
        raise ValueError(f"bn_kwargs={bn_kwargs!r} contradicts bn_variance={bn_variance}: pass bn_variance= only")
    kwargs["variance"] = bn_variance
    return kwargs


def _repaired(model: nn.Module, base: nn.Module, graph: ChannelGraph, removals, data, *, repairs, method, ridge,
              sequential, samples, batch_size, bn_kwargs) -> tuple[nn.Module, list[LayerCompensation]]:
    """``model`` (``base`` pruned by ``removals``, a fresh copy) repaired in place."""
    records: list[LayerCompensation] = []
    if "compensation" in repairs:
        res = compensate(model, base, graph, removals, data, method=method, ridge=ridge, sequential=sequential,
                         samples=samples, batch_size=batch_size, inplace=True)
        records = res.layers
    if "bn" in repairs:
        model = bn_recalibrate(model, data=_bn_source(data), inplace=True, **bn_kwargs)
    return model.eval(), records


@earlier_positions(("criterion", "target"), criterion_first, "prune_and_repair(model, target, criterion=...)")
def prune_and_repair(model: nn.Module, target: Target | None = None, *,
                     criterion: str | Callable[..., ChannelScores] | ChannelScores = "dfpc", data=None,
                     evaluate=None, graph: ChannelGraph | None = None, input_shape: tuple | None = None,
                     progress: bool = False, repairs=REPAIRS, step_fraction: float = 0.01, coupled: bool = True,
                     align: int = 1, max_steps: int | None = None, method: str = "auto", ridge: float = 1e-4,
                     sequential: bool = True, samples: int | None = None, batch_size: int = 250,
                     bn_variance: bool = False, bn_kwargs: dict | None = None, latency: bool = False,
                     latency_shape: tuple | None = None,
                     latency_repeats: int = 10, latency_threads: int | None = None,
                     name: str | None = None) -> RepairResult:
    """:func:`pruning_lib.global_prune` to ``target`` by ``criterion``'s global order, every step
    repaired (:func:`repair_pruned`) before it is measured.

    ``data``: unlabelled calibration samples for the criterion (if it reads data) and the repairs: a
    DataLoader, a tensor of inputs, a course split name such as ``"dist"``, or synthesised images'
    ``.loader()``; ``samples`` caps what the compensation reads. ``repairs``: any of ``"bn"``,
    ``"compensation"`` (compensation runs first, as in the paper); ``()`` prunes without repair.
    ``bn_variance``: re-estimate the BatchNorm variances too (default: the means only; docs/repair.md).
    ``evaluate``: a data source or ``evaluate(model) -> float`` for every step's accuracy (required with
    an accuracy target). ``method``, ``ridge``, ``sequential``: see
    :func:`~pruning_lib.repair.compensation.compensate`. The rest as in :func:`pruning_lib.global_prune`.
    The caller's model is never modified."""
    repairs = _check_repairs(repairs)
    if repairs and data is None:
        raise ValueError(f"repairs={repairs} need data=: unlabelled samples (a DataLoader, a tensor of inputs, a "
                         "course split name such as 'dist', or synthesize_images(model, shape=...).loader()); "
                         "or pass repairs=()")
    if input_shape is None and graph is None and not isinstance(criterion, ChannelScores) and data is not None:
        input_shape = (1,) + tuple(next(iter_inputs(data, 1, 1)).shape[1:])
    bn_kwargs = _bn_settings(bn_variance, bn_kwargs)
    records: list[list[LayerCompensation]] = []

    def repair(pruned: nn.Module, original: nn.Module, graph: ChannelGraph, removals) -> nn.Module:
        fixed, recs = _repaired(pruned, original, graph, removals, data, repairs=repairs, method=method,
                                ridge=ridge, sequential=sequential, samples=samples, batch_size=batch_size,
                                bn_kwargs=bn_kwargs)
        records.append(recs)
        return fixed

    res = global_prune(model, target, criterion=criterion, data=data,
                       evaluate=evaluate, graph=graph, input_shape=input_shape, progress=progress,
                       step_fraction=step_fraction, coupled=coupled, align=align, max_steps=max_steps,
                       repair=repair if repairs else None, latency=latency, latency_shape=latency_shape,
                       latency_repeats=latency_repeats, latency_threads=latency_threads, name=name)
    res.report.method += " + " + ("+".join(repairs) or "no repair")
    res.report.info.update(repairs=list(repairs), method=method, ridge=ridge, sequential=sequential, samples=samples,
                           bn_variance=bn_variance)
    fields = {f.name: getattr(res, f.name) for f in dataclasses.fields(res)}
    return RepairResult(**fields, repairs=repairs,
                        compensation={i + 1: r for i, r in enumerate(records)})

