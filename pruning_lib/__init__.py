"""pruning_lib: data-free structured pruning of CNNs, after DFPC and TVSPrune (ICLR 2023).

``import pruning_lib as pl`` gives the verbs::

    graph = pl.discover(model, input_shape=(1, 3, 32, 32))          # the data flow couplings (DFCs)
    res = pl.global_prune(model, "dfpc", pl.Target(parameters=0.3))  # DFPC: 30 % of the parameters removed
    res = pl.iter_tvs_prune(model, loader, evaluate, pl.Target(parameters=0.05, accuracy_drop=1.0))
    model = pl.bn_recalibrate(res.model, loader)
    pl.count_parameters(res.model), pl.count_flops(res.model), pl.compare_latency({...})

Data is passed as the ecosystem passes it: a ``torch.utils.data.DataLoader`` (any iterable of
``(inputs, labels)`` batches) or an ``evaluate(model) -> float`` callable; the course's CIFAR-10
splits (:mod:`pruning_lib.course`) are one such source. Subpackages: :mod:`.graph` (discovery),
:mod:`.surgery` (one handler per layer type), :mod:`.scoring` (criteria), :mod:`.pruning`
(procedures), :mod:`.measure`, :mod:`.course` (CIFAR-10 data, models, training, checkpoints).
"""
import os as _os

# OpenMP threads that spin while waiting collapse when the CPU is shared (a laptop running other work,
# two notebooks at once): measured here, a ResNet-20 batch took over 10x longer with 2 spinning threads
# than with 1. Passive waiting avoids that and costs nothing measurable on an idle machine. It only
# takes effect if set before torch is first imported; an explicit setting in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .graph import DFC, ChannelGraph, ChannelRef, UntraceableModelError, discover  # noqa: E402
from .measure import (compare_latency, count_flops, count_parameters, coupled_mac_share,  # noqa: E402
                      coupled_time_share, evaluate, measure_latency, speedups)
from .pruning import (GlobalPruningResult, IterResult, OneShotResult, PruningReport, PruningStep,  # noqa: E402
                      PruningTarget, Target, bn_recalibrate, global_prune, iter_tvs_prune, prune_to_sparsity,
                      removal_order, tvs_prune)
from .scoring import (ChannelScores, Criterion, collect_statistics, dfpc_scores, eps_ratios,  # noqa: E402
                      filter_scores, get_criterion, l1_scores, list_criteria, random_scores, register_criterion,
                      tvs_scores)
from .sources import DataSourceError  # noqa: E402
from .surgery import (PruningError, channel_counts, plan, predicted_parameters, prune,  # noqa: E402
                      register_handler, resize_to_state)

__all__ = [
    # the channel graph
    "discover", "ChannelGraph", "DFC", "ChannelRef", "UntraceableModelError",
    # surgery
    "prune", "plan", "predicted_parameters", "channel_counts", "resize_to_state", "register_handler", "PruningError",
    # criteria
    "ChannelScores", "Criterion", "register_criterion", "get_criterion", "list_criteria", "dfpc_scores",
    "l1_scores", "random_scores", "tvs_scores", "eps_ratios", "collect_statistics", "filter_scores",
    # pruning
    "Target", "PruningTarget", "global_prune", "GlobalPruningResult", "removal_order", "tvs_prune",
    "iter_tvs_prune", "prune_to_sparsity", "OneShotResult", "IterResult", "bn_recalibrate", "PruningReport",
    "PruningStep",
    # measures
    "evaluate", "count_parameters", "count_flops", "measure_latency", "compare_latency", "speedups",
    "coupled_mac_share", "coupled_time_share",
    # data
    "DataSourceError",
    "__version__",
]
