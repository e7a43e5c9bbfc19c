"""Prune to a target and repair every step without the training set (ModHiFi-P's procedure,
Kashyap et al., NeurIPS 2025, section 4 and D.2, on the library's global pruning).

The channels are ordered once by a criterion on the unpruned model (as DFPC's global pruning does:
:func:`pruning_lib.pruning.removal_order`); step n removes the first n x ``step_fraction`` of them
from the unpruned model, physically, then repairs the result against the unpruned model:
compensation of every reader of removed channels (:mod:`.compensation`, Proposition 3.8 and the
least-squares refit), then BatchNorm re-estimation (:func:`pruning_lib.bn_recalibrate`, the paper's
"BN update" of section 5.4.1), both on the same unlabelled ``data`` (real held-out images, a course
split, or images from :func:`~pruning_lib.repair.synthesis.synthesize_images`). Each step is repaired
from the unpruned model afresh, so the steps of runs with different repairs are the same prunings.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..graph import DFC, ChannelGraph, discover
from ..measure import compare_latency, count_flops, count_parameters, speedups
from ..measure import evaluate as accuracy_on
from ..pruning import PruningReport, PruningStep, Target, bn_recalibrate, removal_order, step_plan
from ..scoring import ChannelScores, resolve_criterion
from ..surgery import prune
from .compensation import LayerCompensation, compensate
from .inputs import iter_inputs

__all__ = ["REPAIRS", "RepairResult", "repair_pruned", "prune_and_repair"]

REPAIRS = ("bn", "compensation")


@dataclass
class RepairResult:
    """A run: its per-step report (step 0 = the unpruned model), the accepted repaired model (the last
    step within the target), the unpruned model's graph and scores, the removal order, and per step
    the compensation records (empty without compensation)."""
    report: PruningReport
    model: nn.Module
    graph: ChannelGraph
    scores: ChannelScores
    order: list[tuple[DFC, int]]
    accepted_step: int
    stop_reason: str
    repairs: tuple[str, ...]
    original: nn.Module = field(repr=False)
    prefix: list[int] = field(default_factory=list, repr=False)
    align: int = 1
    compensation: dict[int, list[LayerCompensation]] = field(default_factory=dict, repr=False)

    def removals(self, step: int | None = None) -> dict[DFC, list[int]]:
        """The channels (indices of the unpruned model) removed up to ``step`` (default: accepted)."""
        step = self.accepted_step if step is None else step
        return step_plan(self.order, self.prefix[step], self.align)


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
                  batch_size: int = 250, bn_kwargs: dict | None = None) -> tuple[nn.Module, list[LayerCompensation]]:
    """``prune(base, graph, removals)`` repaired: compensation against ``base`` (if in ``repairs``),
    then BatchNorm re-estimation (if in ``repairs``; ``bn_kwargs`` go to :func:`bn_recalibrate`).
    Returns the repaired model (in eval mode) and the compensation records. ``base`` is not modified."""
    repairs = _check_repairs(repairs)
    model = prune(base, graph, removals)
    records: list[LayerCompensation] = []
    if "compensation" in repairs:
        res = compensate(model, base, graph, removals, data, method=method, ridge=ridge, sequential=sequential,
                         samples=samples, batch_size=batch_size, inplace=True)
        records = res.layers
    if "bn" in repairs:
        model = bn_recalibrate(model, _bn_source(data), inplace=True, **(bn_kwargs or {}))
    return model.eval(), records


def _evaluator(evaluate) -> tuple[Callable[[nn.Module], float] | None, str]:
    if evaluate is None:
        return None, ""
    if callable(evaluate) and not isinstance(evaluate, nn.Module):
        return evaluate, getattr(evaluate, "__name__", type(evaluate).__name__)
    name = evaluate if isinstance(evaluate, str) else getattr(evaluate, "name", type(evaluate).__name__)
    return (lambda m: accuracy_on(m, evaluate)), name


def prune_and_repair(model: nn.Module, criterion: str | Callable[..., ChannelScores] | ChannelScores = "dfpc",
                     target: Target | None = None, *, data=None, evaluate=None, repairs=REPAIRS,
                     step_fraction: float = 0.01, coupled: bool = True, input_shape: tuple | None = None,
                     graph: ChannelGraph | None = None, max_steps: int | None = None, align: int = 1,
                     method: str = "auto", ridge: float = 1e-4, sequential: bool = True, samples: int | None = None,
                     batch_size: int = 250, bn_kwargs: dict | None = None, latency: bool = False,
                     latency_shape: tuple | None = None, latency_repeats: int = 10,
                     latency_threads: int | None = None, progress: bool = True,
                     name: str | None = None) -> RepairResult:
    """Prune ``model`` to ``target`` by ``criterion``'s global order and repair every step.

    ``criterion``: a registered name (``"dfpc"``, ``"l1"``, ``"hifi"``...), a function
    (model, graph, *, data) -> ChannelScores, or ready scores. ``data``: unlabelled calibration samples
    for the criterion (if it reads data) and the repairs: a DataLoader, a tensor of inputs, a course
    split name such as ``"dist"``, or synthesised images' ``.loader()``; ``samples`` caps what the
    compensation reads. ``repairs``: any of ``"bn"``, ``"compensation"`` (compensation runs first,
    as in the paper); ``()`` prunes without repair. ``evaluate``: a data source or
    ``evaluate(model) -> float`` for every step's accuracy (the course's ``"val"`` split when an
    accuracy target needs one). ``method``, ``ridge``, ``sequential``: see
    :func:`~pruning_lib.repair.compensation.compensate`. The rest as in :func:`pruning_lib.global_prune`.
    The caller's model is never modified."""
    target = target or Target()
    if not isinstance(target, Target):
        raise TypeError(f"target must be a pruning_lib.Target, got {type(target).__name__}")
    repairs = _check_repairs(repairs)
    if repairs and data is None:
        raise ValueError(f"repairs={repairs} need data=: unlabelled samples (a DataLoader, a tensor of inputs, a "
                         "course split name such as 'dist', or synthesize_images(model).loader()); or pass repairs=()")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction={step_fraction}: give a fraction of the prunable channels in (0, 1]")
    if target.needs_accuracy and evaluate is None:
        evaluate = "val"
    evaluator, eval_name = _evaluator(evaluate)
    latency = latency or target.speedup is not None
    if input_shape is None:
        input_shape = (1,) + tuple(next(iter_inputs(data, 1, 1)).shape[1:]) if data is not None else (1, 3, 32, 32)
    input_shape = tuple(input_shape)
    latency_shape = latency_shape or (64,) + input_shape[1:]

    base = copy.deepcopy(model).eval()
    if isinstance(criterion, ChannelScores):
        scores, graph = criterion, criterion.graph
    else:
        graph = graph if graph is not None else discover(base, input_shape)
        fn = resolve_criterion(criterion)
        scores = fn(base, graph) if data is None else fn(base, graph, data=data)
    eligible = [d for d in graph.dfcs if coupled or not d.coupled]
    if not eligible:
        raise ValueError("no DFC is eligible: the model has no non-coupled DFC; prune with coupled=True")
    order = removal_order(scores, eligible)
    n_eligible = sum(d.channels for d in eligible)
    per_step = max(1, round(step_fraction * n_eligible))
    limit = len(order) if target.channels is None else min(len(order), int(target.channels * n_eligible))
    total_steps = -(-limit // per_step)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    label = scores.method + ("" if coupled else " (no coupled)") + " + " + ("+".join(repairs) or "no repair")
    report = PruningReport(label, name or type(model).__name__, eval_name,
                           info={"criterion": scores.method, "repairs": list(repairs), "coupled": coupled,
                                 "step_fraction": step_fraction, "channels_per_step": per_step,
                                 "eligible_channels": n_eligible, "input_shape": list(input_shape), "align": align,
                                 "method": method, "ridge": ridge, "sequential": sequential, "samples": samples})

    def measure(step: int, m: nn.Module, removed: int) -> PruningStep:
        rec = PruningStep(step, removed, count_parameters(m), count_flops(m, input_shape))
        if evaluator is not None:
            rec.accuracy = round(evaluator(m), 4)
        if latency:
            models = {"unpruned": base} if step == 0 else {"unpruned": base, "pruned": m}
            res = compare_latency(models, latency_shape, repeats=latency_repeats, threads=latency_threads)
            key = "unpruned" if step == 0 else "pruned"
            rec.latency_ms = res[key].median_ms
            rec.speedup = round(speedups(res, "unpruned")[key], 4)
        return rec

    first = measure(0, base, 0)
    report.add(first)
    prefix, comp = [0], {}
    accepted, accepted_step = base, 0
    reason = "every eligible channel but one per DFC removed"
    removed = 0
    bar = tqdm(range(1, total_steps + 1), desc=f"prune and repair ({label})", disable=not progress)
    for step in bar:
        removed = min(step * per_step, limit)
        plan_n = step_plan(order, removed, align)
        current, records = repair_pruned(base, graph, plan_n, data, repairs=repairs, method=method, ridge=ridge,
                                         sequential=sequential, samples=samples, batch_size=batch_size,
                                         bn_kwargs=bn_kwargs)
        comp[step] = records
        rec = measure(step, current, sum(len(v) for v in plan_n.values()))
        prefix.append(removed)
        report.add(rec)
        if rec.accuracy is not None:
            bar.set_postfix(flops=f"{first.flops / rec.flops:.2f}x", acc=f"{rec.accuracy:.1f}")
        if target.accuracy_drop is not None and first.accuracy - rec.accuracy > target.accuracy_drop:
            rec.note, reason = "beyond the accuracy-drop target", f"accuracy drop above {target.accuracy_drop} points"
            break
        if target.min_accuracy is not None and rec.accuracy < target.min_accuracy:
            rec.note, reason = "below the accuracy floor", f"accuracy below {target.min_accuracy} %"
            break
        accepted, accepted_step = current, step
        hit = []
        keep_p, keep_f = target.kept("parameters"), target.kept("flops")
        if keep_p is not None and rec.parameters <= keep_p * first.parameters:
            hit.append(f"parameters at most {keep_p:.0%} of the unpruned")
        if keep_f is not None and rec.flops <= keep_f * first.flops:
            hit.append(f"FLOPs at most {keep_f:.0%} of the unpruned")
        if target.speedup is not None and rec.speedup >= target.speedup:
            hit.append(f"measured speedup at least {target.speedup}x")
        if hit:
            reason, rec.note = "; ".join(hit), "target reached"
            break
        if removed >= limit:
            if target.channels is not None and limit < len(order):
                reason = f"{target.channels:.0%} of the eligible channels removed"
            break
    else:
        if max_steps is not None and total_steps == max_steps and removed < limit:
            reason = f"max_steps={max_steps} reached"
    bar.close()
    report.info.update(accepted_step=accepted_step, stop_reason=reason)
    return RepairResult(report, accepted, graph, scores, order, accepted_step, reason, repairs, base, prefix, align,
                        comp)
