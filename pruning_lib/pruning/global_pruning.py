"""Global pruning by static channel scores, with physical surgery at every step (DFPC's procedure).

Narshana et al. (ICLR 2023) score every channel of every DFC once, then repeatedly remove the
globally lowest-scoring channels, a small fraction per round, never the last channel of a DFC,
rebuilding the layers smaller, until a budget is met. Here a step removes ``step_fraction`` of the
channels eligible at the start (a constant step), and the run stops at a target on parameters,
FLOPs, measured latency speedup, or accuracy drop (:class:`~pruning_lib.pruning.target.Target`).
Data-free criteria need no data; a data-driven one (``"tvs"``) reads ``data=`` (a DataLoader), and
an accuracy target reads ``evaluate=`` (a DataLoader or an ``evaluate(model) -> float``). The ablation of the paper is the
``coupled`` switch: ``False`` prunes only non-coupled DFCs (|A| = |B| = 1).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import sources
from ..measure.accuracy import as_evaluator
from ..graph.discovery import discover
from ..graph.types import DFC, ChannelGraph
from ..legacy import earlier_positions
from ..measure.counts import count_flops, count_parameters
from ..measure.latency import compare_latency, speedups
from ..progress import close_bar
from ..scoring.base import ChannelScores, resolve_criterion
from ..sources import DataSource, Evaluator
from ..surgery.prune import prune
from .report import PruningReport, PruningStep
from .result import PruningResult, Removals, named
from .target import StopRule, Target


@dataclass
class GlobalPruningResult(PruningResult):
    """A global-pruning run (:class:`~pruning_lib.pruning.result.PruningResult`), plus the removal
    order, so that any step of the report can be rebuilt (:meth:`model_at`)."""
    order: list[tuple[DFC, int]] = field(default_factory=list, repr=False)
    original: nn.Module | None = field(default=None, repr=False)
    prefix: list[int] = field(default_factory=list, repr=False)   # order entries taken at each step
    align: int = 1

    @property
    def removals(self) -> Removals:
        """The channels (indices of the unpruned model) removed up to the accepted step, keyed by the DFCs
        of ``graph``; ``removals(step)`` those removed up to ``step``."""
        return Removals(self._plan(self.accepted_step), self._plan)

    def _plan(self, step: int) -> dict[DFC, list[int]]:
        return step_plan(self.order, self.prefix[step], self.align)

    def model_at(self, step: int) -> nn.Module:
        """The physically pruned model of a step, rebuilt from the unpruned one (unrepaired)."""
        return prune(self.original, self.graph, self.removals(step))


def check_scores(scores: ChannelScores, graph: ChannelGraph) -> None:
    """Refuse scores that do not belong to ``graph`` (a criterion that rediscovered the model instead
    of scoring the graph it was given): their DFCs are other objects, so no channel could be found."""
    if not isinstance(scores, ChannelScores):
        raise TypeError(f"the criterion returned {type(scores).__name__}; a criterion returns ChannelScores")
    ours = {id(d) for d in graph.dfcs}
    missing = [d for d in graph.dfcs if d not in scores.scores]
    if missing or any(id(d) not in ours for d in scores.scores):
        raise ValueError(f"the scores ({scores.method}) are not keyed by the DFCs of the graph being pruned "
                         f"({len(missing)} of its {len(graph.dfcs)} DFCs have no score): a criterion must score "
                         "the graph it is given (criterion(model, graph, ...)), not rediscover the model")


def removal_order(scores: ChannelScores, dfcs: list[DFC]) -> list[tuple[DFC, int]]:
    """Global ascending order of the channels of ``dfcs``, leaving each DFC's best channel out
    (scores are static, so skipping the last channel of a DFC is the same as never listing it)."""
    entries = []
    for dfc in dfcs:
        s = scores[dfc]
        keep = int(torch.argmax(s))
        entries += [(float(s[k]), dfc.index, k, dfc) for k in range(dfc.channels) if k != keep]
    entries.sort(key=lambda e: e[:3])
    return [(e[3], e[2]) for e in entries]


def step_plan(order: list[tuple[DFC, int]], n: int, align: int = 1) -> dict[DFC, list[int]]:
    """The first ``n`` channels of ``order``, per DFC. With ``align`` > 1 each DFC gives back its
    highest-ranked removals until the channels it keeps are a multiple of ``align`` (CPU kernels
    can be much slower on odd channel counts); a DFC of at most ``align`` channels is left as is."""
    plan: dict[DFC, list[int]] = {}
    for dfc, k in order[:n]:
        plan.setdefault(dfc, []).append(k)
    if align > 1:
        for dfc, ks in list(plan.items()):
            if dfc.channels <= align:
                continue
            kept = dfc.channels - len(ks)
            kept = -(-kept // align) * align
            del ks[dfc.channels - kept:]
            if not ks:
                del plan[dfc]
    return plan


Repair = Callable[[nn.Module, nn.Module, ChannelGraph, "dict[DFC, list[int]]"], nn.Module]


def criterion_first(args: tuple) -> bool:
    """The earlier ``verb(model, criterion, target)`` order: a criterion where the target goes."""
    return isinstance(args[1], (str, ChannelScores)) or (callable(args[1]) and not isinstance(args[1], Target))


@earlier_positions(("criterion", "target"), criterion_first,
                   "global_prune(model, target, criterion=...)")
def global_prune(model: nn.Module, target: Target | None = None, *,
                 criterion: str | Callable[..., ChannelScores] | ChannelScores = "dfpc",
                 data: DataSource | None = None, evaluate: Evaluator | DataSource | None = None,
                 graph: ChannelGraph | None = None, input_shape: tuple | None = None, progress: bool = False,
                 step_fraction: float = 0.01, coupled: bool = True, align: int = 1, max_steps: int | None = None,
                 repair: Repair | None = None, latency: bool = False, latency_shape: tuple | None = None,
                 latency_repeats: int = 10, latency_threads: int | None = None,
                 name: str | None = None) -> GlobalPruningResult:
    """Prune ``model`` globally by static scores until ``target`` (or until nothing is left).

    ``criterion``: a registered name (``"dfpc"``, ``"l1"``, ``"random"``, ``"tvs"``; see
    :func:`pruning_lib.list_criteria`), a function (model, graph, **data) -> ChannelScores, or ready
    scores. ``data``: the samples a data-driven criterion reads (a DataLoader of (inputs, labels)).
    ``evaluate``: a data source or ``evaluate(model) -> float`` for the accuracy of every step
    (required with an accuracy target). ``input_shape``: the example input for tracing and FLOPs
    (default: the graph's, else one sample of ``data``; one of them is required). ``repair``:
    ``repair(pruned, original, graph, removals) -> model`` applied to every step before it is
    measured (how :func:`pruning_lib.repair.prune_and_repair` repairs). ``latency``: measure every step
    against the unpruned model in the same run (on by itself for a speedup target; at ``latency_shape``,
    default a batch of 64 of ``input_shape``). ``align``: keep channel counts multiples of this (see
    :func:`step_plan`). The caller's model is never modified.
    """
    target = Target() if target is None else target
    if not isinstance(target, Target):
        raise TypeError(f"target must be a pruning_lib.Target, got {type(target).__name__} "
                        "(the criterion is the keyword criterion=)")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction={step_fraction}: give a fraction of the prunable channels in (0, 1]")
    if target.needs_accuracy:
        # (a reporting-only evaluate is allowed here: DFPC's curves stop on a test-accuracy drop, the
        # paper's protocol that scripts/dfpc_experiments.py reproduces)
        evaluate = sources.resolve(sources.required(evaluate, "evaluate",
                                                    f"global_prune with an accuracy target ({target})"))
    if data is not None:
        data = sources.resolve(data)
        sources.check_decides(data, "data", "global_prune")
    evaluator, eval_name = as_evaluator(evaluate) if evaluate is not None else (None, "")
    latency = latency or target.speedup is not None
    if isinstance(criterion, ChannelScores):
        graph = criterion.graph
    if input_shape is None and graph is not None:
        input_shape = graph.input_shape
    input_shape = sources.input_shape_for(input_shape, data, "global_prune")
    latency_shape = latency_shape or (64,) + input_shape[1:]

    base = copy.deepcopy(model).eval()
    if isinstance(criterion, ChannelScores):
        scores = criterion
    else:
        graph = graph if graph is not None else discover(base, input_shape)
        fn = resolve_criterion(criterion)
        scores = fn(base, graph) if data is None else fn(base, graph, data=data)
    check_scores(scores, graph)
    eligible = [d for d in graph.dfcs if coupled or not d.coupled]
    if not graph.dfcs:
        reasons = sorted({r for d in graph.unprunable for r in d.reasons})
        raise ValueError(f"the model has no prunable DFC, so there is nothing to prune: {'; '.join(reasons[:4])}"
                         f"{' ...' if len(reasons) > 4 else ''} (see discover(model, input_shape).table())")
    if not eligible:
        raise ValueError(f"no DFC is eligible with coupled=False: all {len(graph.dfcs)} prunable DFCs are "
                         "coupled (|A| > 1 or |B| > 1); prune with coupled=True")
    order = removal_order(scores, eligible)
    n_eligible = sum(d.channels for d in eligible)
    per_step = max(1, round(step_fraction * n_eligible))
    limit = len(order)
    if target.channels is not None:
        limit = min(limit, int(target.channels * n_eligible))
    total_steps = -(-limit // per_step)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    report = PruningReport(scores.method + ("" if coupled else " (no coupled)"), name or type(model).__name__,
                           eval_name,
                           info={"criterion": scores.method, "coupled": coupled, "step_fraction": step_fraction,
                                 "channels_per_step": per_step, "eligible_channels": n_eligible,
                                 "eligible_dfcs": len(eligible), "input_shape": list(input_shape), "align": align})

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
    stop = StopRule(target, first)
    prefix = [0]
    accepted, accepted_step = base, 0
    reason = "every eligible channel but one per DFC removed"
    removed = 0
    already = stop.reached(first)
    if already:                      # e.g. Target(parameters=0.0): the unpruned model meets it
        total_steps, reason = 0, already + " (the unpruned model already meets the target)"
        first.note = "target reached"
    bar = tqdm(range(1, total_steps + 1), desc=f"pruning ({report.method})", disable=not progress)
    for step in bar:
        removed = min(step * per_step, limit)
        plan = step_plan(order, removed, align)
        current = prune(base, graph, plan)
        if repair is not None:
            current = repair(current, base, graph, plan)
        rec = measure(step, current, sum(len(v) for v in plan.values()))
        prefix.append(removed)
        report.add(rec)
        bar.set_postfix(params=f"{rec.parameters / first.parameters:.2f}",
                        **({"acc": f"{rec.accuracy:.1f}"} if rec.accuracy is not None else {}))
        rejected = stop.rejects(rec)
        if rejected:
            reason = rejected
            break
        accepted, accepted_step = current, step
        hit = stop.reached(rec)
        if hit:
            reason = hit
            break
        if removed >= limit:
            if target.channels is not None and limit < len(order):
                reason = f"{target.channels:.0%} of the eligible channels removed"
            break
    else:
        if max_steps is not None and total_steps == max_steps and removed < limit:
            reason = f"max_steps={max_steps} reached"
    close_bar(bar, reason)
    report.info.update(accepted_step=accepted_step, stop_reason=reason)
    return GlobalPruningResult(accepted, report, graph, named(step_plan(order, prefix[accepted_step], align)),
                               reason, accepted_step, scores, order, base, prefix, align)


__all__ = ["GlobalPruningResult", "Repair", "check_scores", "removal_order", "step_plan", "global_prune"]
