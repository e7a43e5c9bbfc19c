"""TVSPrune and IterTVSPrune: prune the filters that cannot tell classes apart (Murti et al., ICLR 2023).

Scores come from :func:`pruning_lib.scoring.tvs.tvs_scores` (the min over class pairs of a distance
between class-conditional Gaussians, per DFC channel); the unit of pruning is a DFC channel
(:mod:`pruning_lib.graph`) and pruning is physical (:mod:`pruning_lib.surgery`), not a mask. Samples
come from any data source (a DataLoader of (inputs, labels), or a course split); the accuracy gate
from a data source or an ``evaluate(model) -> float`` callable.

The eps rule (released code): in each DFC prune channel j when s_j / max_k s_k <= eps * mean_k(s_k /
max_k s_k), i.e. when s_j <= eps * mean(s): the ratio ``s_j / mean(s)`` is what is compared to eps.
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from .. import sources
from ..measure.accuracy import as_evaluator
from ..graph.discovery import discover
from ..graph.types import DFC, ChannelGraph
from ..measure.counts import count_flops, count_parameters
from ..progress import close_bar
from ..scoring.base import ChannelScores
from ..scoring.magnitude import l1_scores, random_scores
from ..scoring.tvs import STREAM_REDUCE, eps_ratios, tvs_scores
from ..sources import DataSource, Evaluator
from ..surgery.prune import predicted_parameters, prune
from .bn_recalibration import bn_recalibrate
from .report import PruningReport, PruningStep
from .target import Target


def _dfc_key(dfc: DFC) -> tuple:
    """A name for a DFC that survives pruning (its feed-in layers), to match DFCs across graphs."""
    return tuple(sorted(dfc.A))


def eps_candidates(scores: ChannelScores, eps: float, min_channels: int = 1) -> dict[DFC, list[int]]:
    """The released rule: in each DFC the channels with s_j / max s <= eps * mean(s / max s), never
    leaving fewer than ``min_channels`` (the best-scoring channels are kept)."""
    out = {}
    for d, r in eps_ratios(scores).items():
        cand = torch.nonzero(r <= eps).flatten().tolist()
        room = d.channels - min_channels
        if len(cand) > room:
            cand = sorted(cand, key=lambda j: (float(scores.scores[d][j]), j))[:max(room, 0)]
        if cand:
            out[d] = sorted(cand)
    return out


def cap_removals(model: nn.Module, graph: ChannelGraph, removals: Mapping[DFC, list[int]],
                 order: Mapping[DFC, torch.Tensor], min_parameters: float) -> dict[DFC, list[int]]:
    """The largest part of ``removals`` that keeps at least ``min_parameters`` parameters, taken in
    ascending ``order`` value across DFCs; a channel whose removal would go below the bound is skipped
    and cheaper ones after it are still tried. Exact parameter counts from the surgery plan."""
    flat = sorted(((float(order[d][j]), d.index, j, d) for d, chans in removals.items() for j in chans),
                  key=lambda t: t[:3])
    chosen: dict[DFC, list[int]] = {}
    for _, _, j, d in flat:
        trial = {**chosen, d: chosen.get(d, []) + [j]}
        if predicted_parameters(model, graph, trial) >= min_parameters:
            chosen = trial
    return {d: sorted(c) for d, c in chosen.items()}


def cap_flops(model: nn.Module, graph: ChannelGraph, removals: Mapping[DFC, list[int]],
              order: Mapping[DFC, torch.Tensor], min_flops: float, input_shape: tuple) -> dict[DFC, list[int]]:
    """The longest prefix of ``removals`` (in ascending ``order`` value across DFCs) whose pruned
    model keeps at least ``min_flops`` FLOPs (counted by :func:`count_flops`; removing more channels
    never adds FLOPs, so a bisection finds it)."""
    flat = sorted(((float(order[d][j]), d.index, j, d) for d, chans in removals.items() for j in chans),
                  key=lambda t: t[:3])

    def take(n):
        out: dict[DFC, list[int]] = {}
        for _, _, j, d in flat[:n]:
            out.setdefault(d, []).append(j)
        return {d: sorted(c) for d, c in out.items()}

    lo, hi = 0, len(flat)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_flops(prune(model, graph, take(mid)), input_shape) >= min_flops:
            lo = mid
        else:
            hi = mid - 1
    return take(lo)


def _count(removals: Mapping) -> int:
    return sum(len(c) for c in removals.values())


# --------------------------------------------------------------------------- one shot

class _Sparsity:
    """The fraction of the parameters a result removed (from its ``parameters_before``/``_after``)."""
    parameters_before: int
    parameters_after: int

    @property
    def sparsity(self) -> float:
        """Fraction of the parameters removed."""
        return 1.0 - self.parameters_after / self.parameters_before


@dataclass
class OneShotResult(_Sparsity):
    """A one-shot pruning: the smaller model, the channels removed per DFC (by DFC index of the
    original graph), and the parameter counts before and after."""
    model: nn.Module
    removals: dict[int, list[int]]
    scores: ChannelScores
    parameters_before: int
    parameters_after: int

    @property
    def channels_removed(self) -> int:
        return _count(self.removals)


def tvs_prune(model: nn.Module, graph: ChannelGraph | None = None, data: DataSource | None = None,
              eps: float = 0.5, distance: str = "hellinger_lb", stream_reduce: str = "mean",
              per_class: int | None = None, scores: ChannelScores | None = None,
              input_shape: tuple = (1, 3, 32, 32)) -> OneShotResult:
    """TVSPrune, one shot: score every DFC channel on ``data`` and physically remove, in each DFC,
    the channels with s_j <= eps * mean(s) (never all of them). The caller's model is not modified."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (eps={eps} prunes nothing); the released default is 0.5")
    graph = graph if graph is not None else discover(model, input_shape)
    scores = scores if scores is not None else tvs_scores(model, graph, data=data, distance=distance,
                                                          stream_reduce=stream_reduce, per_class=per_class)
    removals = eps_candidates(scores, eps)
    pruned = prune(model, graph, removals) if removals else copy.deepcopy(model)
    return OneShotResult(pruned, {d.index: c for d, c in removals.items()}, scores,
                         count_parameters(model), count_parameters(pruned))


def prune_to_sparsity(model: nn.Module, scores: ChannelScores, target_sparsity: float,
                      min_channels: int = 1) -> OneShotResult:
    """One shot at a parameter budget with any criterion: channels ranked across DFCs by their
    layer-normalised score s_j / mean(s) (the eps rule's ratio), removed lowest first until the
    next one would remove more than ``target_sparsity`` of the parameters. The baselines (L1,
    random) use this with their own scores, so all methods share one allocation rule."""
    _check_fraction(target_sparsity, "target_sparsity")
    graph = scores.graph
    p0 = count_parameters(model)
    every = {d: list(range(d.channels)) for d in graph.dfcs}
    ratios = eps_ratios(scores)
    # keep the best min_channels of each DFC out of the pool
    pool = {}
    for d, chans in every.items():
        order = sorted(chans, key=lambda j: (float(scores.scores[d][j]), j))
        pool[d] = order[:max(d.channels - min_channels, 0)]
    removals = cap_removals(model, graph, pool, ratios, p0 * (1.0 - target_sparsity))
    pruned = prune(model, graph, removals) if removals else copy.deepcopy(model)
    return OneShotResult(pruned, {d.index: c for d, c in removals.items()}, scores, p0, count_parameters(pruned))


def _check_fraction(x: float, name: str) -> None:
    if not (isinstance(x, numbers.Real) and not isinstance(x, bool) and 0.0 <= x < 1.0):
        raise ValueError(f"{name} is a fraction of the parameters in [0, 1), e.g. 0.035 for 3.5 %; got {x!r}")


# --------------------------------------------------------------------------- iterative

@dataclass
class Attempt:
    """One try of IterTVSPrune: the eps used, the channels proposed, the val accuracy, the verdict."""
    iteration: int
    eps: float
    candidates: int
    capped: int
    sparsity: float
    val_accuracy: float | None
    accepted: bool
    note: str = ""


@dataclass
class IterResult(_Sparsity):
    """IterTVSPrune's outcome: the final model, the per-step report (accuracy on ``val``), every
    attempt (accepted or not), why it stopped, and the sparsity reached."""
    model: nn.Module
    report: PruningReport
    attempts: list[Attempt]
    stop_reason: str
    parameters_before: int
    parameters_after: int
    eps: float
    removed: dict[tuple, int] = field(default_factory=dict)      # feed-in names of a DFC -> channels removed

    @property
    def iterations(self) -> int:
        return len(self.attempts)


def iter_tvs_prune(model: nn.Module, data: DataSource | None = None, evaluate: Evaluator | DataSource | None = None,
                   target: Target | None = None, *, target_sparsity: float | None = None,
                   min_accuracy: float | None = None, max_drop: float | None = None,
                   eps0: float = 0.5, eps_step: float = 0.025, max_step: float | None = None,
                   max_iterations: int = 100, distance: str = "hellinger_lb", stream_reduce: str = "mean",
                   per_class: int | None = None, batch_size: int = 250, input_shape: tuple = (1, 3, 32, 32),
                   name: str = "", progress: bool = False,
                   on_scores: Callable[[nn.Module, ChannelScores], None] | None = None) -> IterResult:
    """IterTVSPrune with the released code's faults fixed (TVSPrune note, "as released").

    ``data`` (a DataLoader of (inputs, labels), or a course split such as ``dist``) gives the samples
    of the scores; ``evaluate`` (a DataLoader, ``evaluate(model) -> float``, or a course split such
    as ``val``) the accuracy gate. Both are required: there is no default data set. ``target``: a :class:`~pruning_lib.Target` (``parameters``: the sparsity to reach,
    ``min_accuracy``, ``accuracy_drop``, and ``flops``: the fraction of FLOPs to remove, each step
    capped so as not to pass it; ``channels`` and ``speedup`` are refused); ``target_sparsity``,
    ``min_accuracy`` and ``max_drop`` are the first three as keywords.

    Each iteration re-discovers the DFCs and RE-ESTIMATES the scores on the current pruned model
    from ``data``; proposes, in every DFC, the channels with s_j <= eps * mean(s); caps the proposal,
    lowest ratio first, so that at most ``max_step`` (fraction of the ORIGINAL parameters, optional)
    is removed per step and the total never exceeds ``target_sparsity``; prunes physically; and
    accepts if the accuracy on ``evaluate`` (never test) stays >= the floor (``min_accuracy`` in %, or the
    unpruned val accuracy minus ``max_drop`` points; no floor: every step is accepted). A rejection
    lowers eps by ``eps_step``. Stops when the target is reached (within one channel), eps reaches
    0, nothing is under eps, or after ``max_iterations`` tries: every iteration either removes a
    channel or lowers eps, so it always ends. The caller's model is never modified.
    After a rejection the model is unchanged, so its scores are reused; ``on_scores(model, scores)``
    is called each time scores are estimated (to inspect them).
    """
    if target is not None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a pruning_lib.Target, got {type(target).__name__}")
        target.only(("parameters", "flops", "accuracy_drop", "min_accuracy"), "iter_tvs_prune",
                    "For a channel or speedup target use global_prune(model, 'tvs', target, data=...)")
        target_flops = target.flops
        if (target_sparsity, min_accuracy, max_drop) != (None, None, None):
            raise TypeError("give target=Target(...) or the keywords target_sparsity/min_accuracy/max_drop, not both")
        target_sparsity, min_accuracy, max_drop = target.parameters, target.min_accuracy, target.accuracy_drop
    else:
        target_flops = None
    if target_sparsity is None and min_accuracy is None and max_drop is None and target_flops is None:
        raise ValueError("give a target: target_sparsity (fraction of parameters, e.g. 0.035) and/or an "
                         "accuracy floor (min_accuracy in %, or max_drop in points)")
    if target_sparsity is not None:
        _check_fraction(target_sparsity, "target_sparsity")
    Target(accuracy_drop=max_drop, min_accuracy=min_accuracy)    # the keywords: Target's one validation
    if max_step is not None:
        _check_fraction(max_step, "max_step")
        if max_step == 0:
            raise ValueError("max_step=0 would never remove anything; use None for no per-step cap")
    if not (eps0 > 0 and eps_step > 0):
        raise ValueError(f"eps0 and eps_step must be > 0 (got {eps0}, {eps_step}); the released values are 0.5, 0.025")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}")
    data = sources.resolve(sources.required(data, "data", "iter_tvs_prune (the samples of the scores)"))
    evaluate = sources.resolve(sources.required(evaluate, "evaluate", "iter_tvs_prune (the accuracy gate)"))
    sources.check_decides(data, "data", "iter_tvs_prune")
    sources.check_decides(evaluate, "evaluate", "iter_tvs_prune")
    evaluator, val_name = as_evaluator(evaluate)
    k = sources.num_classes(data)

    current = copy.deepcopy(model).eval()
    p0 = count_parameters(current)
    base_val = evaluator(current)
    floor = min_accuracy if min_accuracy is not None else (base_val - max_drop if max_drop is not None else None)
    report = PruningReport("IterTVSPrune", name or type(model).__name__, accuracy_split=val_name,
                           info={"eps0": eps0, "eps_step": eps_step, "distance": distance,
                                 "stream_reduce": stream_reduce, "target_sparsity": target_sparsity,
                                 "floor": floor, "max_step": max_step})
    report.add(PruningStep(0, 0, p0, count_flops(current, input_shape), base_val, note="unpruned"))
    attempts: list[Attempt] = []
    removed_total: dict[tuple, int] = {}
    eps, reason, it = eps0, "", 0
    rejected: set = set()            # proposals rejected on the current model (it has not changed since)
    graph = scores = None

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iterations, desc="IterTVSPrune", leave=False)
    while True:
        if it >= max_iterations:
            reason = f"max_iterations ({max_iterations}) reached"
            break
        if eps <= 1e-12:
            reason = "eps reached 0"
            break
        p_now = count_parameters(current)
        if target_sparsity is not None and 1 - p_now / p0 >= target_sparsity:
            reason = "target sparsity reached"
            break
        if target_flops is not None and 1 - report.final.flops / report.base.flops >= target_flops:
            reason = "target FLOPs reduction reached"
            break
        if scores is None:           # re-estimated on the current model after every accepted step
            graph = discover(current, input_shape)
            scores = tvs_scores(current, graph, data=data, distance=distance, stream_reduce=stream_reduce,
                                per_class=per_class, batch_size=batch_size, num_classes=k)
            if on_scores is not None:
                on_scores(current, scores)
        cand = eps_candidates(scores, eps)
        if _count(cand) == 0:
            reason = f"no channel scores under eps={eps:.3f} x its layer mean"
            break
        ratios = eps_ratios(scores)
        target_bound = p0 * (1 - target_sparsity) if target_sparsity is not None else 0.0
        step_bound = p_now - p0 * max_step if max_step is not None else 0.0
        bound = max(target_bound, step_bound)
        chosen = cap_removals(current, graph, cand, ratios, bound) if bound > 0 else cand
        if target_flops is not None and chosen:
            chosen = cap_flops(current, graph, chosen, ratios, report.base.flops * (1 - target_flops), input_shape)
        if not chosen and step_bound > target_bound:
            # the cheapest candidate costs more than max_step: take the single lowest-ratio one that fits the target
            one = cap_removals(current, graph, cand, ratios, target_bound)
            if one:
                d, j = min(((d, j) for d, c in one.items() for j in c), key=lambda t: (float(ratios[t[0]][t[1]]), t[0].index))
                chosen = {d: [j]}
        it += 1
        if bar is not None:
            bar.update(1)
        if not chosen:
            attempts.append(Attempt(it, eps, _count(cand), 0, 1 - p_now / p0, None, False,
                                    "every candidate would pass the target"))
            reason = "target sparsity reached (within one channel)"
            break
        signature = tuple(sorted((d.index, tuple(c)) for d, c in chosen.items()))
        if signature in rejected:    # the same proposal on the same model: no need to test it again
            attempts.append(Attempt(it, eps, _count(cand), _count(chosen), 1 - p_now / p0, None, False,
                                    "same proposal as a rejected one"))
            eps = round(eps - eps_step, 10)
            continue
        candidate = prune(current, graph, chosen)
        p_new = count_parameters(candidate)
        acc = evaluator(candidate)
        ok = floor is None or acc >= floor
        attempts.append(Attempt(it, eps, _count(cand), _count(chosen), 1 - p_new / p0, acc, ok))
        if ok:
            current, scores, rejected = candidate, None, set()
            for d, c in chosen.items():
                removed_total[_dfc_key(d)] = removed_total.get(_dfc_key(d), 0) + len(c)
            report.add(PruningStep(len(report.steps), sum(removed_total.values()), p_new,
                                   count_flops(current, input_shape), acc, note=f"eps={eps:.3f}"))
        else:
            rejected.add(signature)
            eps = round(eps - eps_step, 10)
    close_bar(bar, reason)
    return IterResult(current, report, attempts, reason, p0, count_parameters(current), eps, removed_total)


# --------------------------------------------------------------------------- baselines

def baseline_scores(model: nn.Module, graph: ChannelGraph, criterion: str, seed: int = 0) -> ChannelScores:
    """L1 (of the feed-in filters, summed over A) or random scores, from :mod:`pruning_lib.scoring.magnitude`."""
    if criterion == "l1":
        return l1_scores(model, graph)
    if criterion == "random":
        return random_scores(model, graph, seed=seed)
    raise ValueError(f"unknown baseline {criterion!r}; choose 'l1' or 'random'")


__all__ = ["tvs_scores", "eps_ratios", "eps_candidates", "cap_removals", "cap_flops", "tvs_prune", "prune_to_sparsity",
           "OneShotResult", "Attempt", "IterResult", "iter_tvs_prune", "bn_recalibrate", "baseline_scores",
           "STREAM_REDUCE"]
