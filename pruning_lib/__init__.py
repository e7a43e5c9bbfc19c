"""pruning_lib: data-free structured pruning of CNNs, after DFPC and TVSPrune (ICLR 2023).

``import pruning_lib as pl`` gives the verbs::

    graph = pl.discover(model, input_shape=(1, 3, 32, 32))          # the data flow couplings (DFCs)
    res = pl.global_prune(model, pl.Target(parameters=0.3), criterion="dfpc", graph=graph)  # DFPC
    res = pl.iter_tvs_prune(model, pl.Target(parameters=0.05, accuracy_drop=1.0), data=loader, evaluate=val)
    res = pl.prune_and_repair(model, pl.Target(flops=0.5), criterion="hifi", data=unlabelled, evaluate=val)
    model = pl.bn_recalibrate(res.model, data=loader)
    pl.count_parameters(res.model), pl.count_flops(res.model, (1, 3, 32, 32)), pl.compare_latency({...}, (64, 3, 32, 32))

Every pruning verb has one shape: ``verb(model, target, *, criterion=, data=, evaluate=, graph=,
input_shape=, progress=)``, returns a :class:`PruningResult` (``.model``, ``.removed``, ``.report``,
``.stop_reason``) and leaves the caller's model as it was. No data set, split or input shape is a
default: a verb that needs one says which argument to give.

Data is passed as the ecosystem passes it: a ``torch.utils.data.DataLoader`` (any iterable of
``(inputs, labels)`` batches) or an ``evaluate(model) -> float`` callable; the course's CIFAR-10
splits (:mod:`pruning_lib.course`) are one such source. Subpackages: :mod:`.graph` (discovery),
:mod:`.surgery` (one handler per layer type), :mod:`.scoring` (criteria), :mod:`.pruning`
(procedures), :mod:`.repair` (repair without the training set), :mod:`.measure`, :mod:`.course`
(CIFAR-10 data, models, training, checkpoints; imported on use).
"""
__version__ = "0.1.0"

from .graph import DFC, ChannelGraph, ChannelRef, UntraceableModelError, discover
from .measure import (compare_latency, count_flops, count_parameters, coupled_mac_share,
                      coupled_time_share, evaluate, measure_latency, speedups)
from .pruning import (GlobalPruningResult, IterResult, PruningReport, PruningResult, PruningStep,
                      Target, bn_recalibrate, global_prune, iter_tvs_prune, prune_to_sparsity, removal_order,
                      tvs_prune)
from .repair import (RepairResult, compensate, hifi_scores, prune_and_repair, repair_pruned,
                     synthesize_images)
from .scoring import (ChannelScores, Criterion, collect_statistics, dfpc_scores, eps_ratios,
                      filter_scores, get_criterion, l1_scores, list_criteria, random_scores, register_criterion,
                      tvs_scores)
from .sources import DataSourceError
from .surgery import (PruningError, channel_counts, plan, predicted_parameters, prune,
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
    "Target", "global_prune", "tvs_prune", "iter_tvs_prune", "prune_to_sparsity", "PruningResult",
    "GlobalPruningResult", "IterResult", "removal_order", "bn_recalibrate", "PruningReport", "PruningStep",
    # repair without the training set
    "prune_and_repair", "repair_pruned", "RepairResult", "hifi_scores", "compensate", "synthesize_images",
    # measures
    "evaluate", "count_parameters", "count_flops", "measure_latency", "compare_latency", "speedups",
    "coupled_mac_share", "coupled_time_share",
    # data
    "DataSourceError",
    "__version__",
]
