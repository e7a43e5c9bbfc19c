"""Pruning procedures: DFPC's global pruning by static scores (:mod:`.global_pruning`), TVSPrune and
IterTVSPrune (:mod:`.tvsprune`), BatchNorm recalibration (:mod:`.bn_recalibration`), the stop
:class:`Target` (:mod:`.target`), the per-step :class:`PruningReport` (:mod:`.report`), and what a
channel of each DFC costs against a removal order (:mod:`.channel_cost`, imported on use)."""
from .bn_recalibration import bn_recalibrate
from .global_pruning import GlobalPruningResult, global_prune, removal_order, step_plan
from .report import PruningReport, PruningStep
from .target import PruningTarget, Target
from .tvsprune import (Attempt, IterResult, OneShotResult, cap_removals, eps_candidates, iter_tvs_prune,
                       prune_to_sparsity, tvs_prune)

__all__ = ["Target", "PruningTarget", "global_prune", "GlobalPruningResult", "removal_order", "step_plan",
           "tvs_prune", "iter_tvs_prune", "prune_to_sparsity", "eps_candidates", "cap_removals", "OneShotResult",
           "IterResult", "Attempt", "bn_recalibrate", "PruningReport", "PruningStep"]
