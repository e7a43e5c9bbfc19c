"""Pruning procedures, each ``verb(model, target, *, criterion=, data=, evaluate=, graph=, input_shape=,
progress=)`` returning a :class:`PruningResult` (:mod:`.result`): DFPC's global pruning by static scores
(:mod:`.global_pruning`), TVSPrune and IterTVSPrune and one-shot pruning to a budget (:mod:`.tvsprune`);
BatchNorm recalibration (:mod:`.bn_recalibration`); the stop :class:`Target` and its :class:`StopRule`
(:mod:`.target`); the per-step :class:`PruningReport` (:mod:`.report`); and what a channel of each DFC
costs against a removal order (:mod:`.channel_cost`, imported on use)."""
from .bn_recalibration import bn_recalibrate
from .global_pruning import GlobalPruningResult, global_prune, removal_order, step_plan
from .report import PruningReport, PruningStep
from .result import PruningResult, Removals, dfc_name
from .target import StopRule, Target
from .tvsprune import (Attempt, IterResult, cap_removals, eps_candidates, iter_tvs_prune, prune_to_sparsity,
                       tvs_prune)

__all__ = ["Target", "StopRule", "PruningResult", "Removals", "dfc_name", "global_prune", "GlobalPruningResult",
           "removal_order",
           "step_plan", "tvs_prune", "iter_tvs_prune", "prune_to_sparsity", "eps_candidates", "cap_removals",
           "IterResult", "Attempt", "bn_recalibrate", "PruningReport", "PruningStep"]
