"""Channel scores with one protocol, ``criterion(model, graph, **data) -> ChannelScores``, and one
registry by name (:mod:`.base`): magnitude baselines (:mod:`.magnitude`), DFPC's data-free bound
(:mod:`.dfpc`), TVSPrune's class separability (:mod:`.tvs`, from :mod:`.class_statistics` and the
Gaussian distances of :mod:`.distances`), and LDIFF (:mod:`.ldiff`)."""
from .base import ChannelScores, Criterion, get_criterion, list_criteria, register_criterion, resolve_criterion
from .class_statistics import ChannelMoments, ClassStatistics, collect_statistics, filter_scores
from .dfpc import UnsupportedLayerError, bn_factor, closed_form_score, dfpc_mean_scores, dfpc_scores
from .magnitude import l1_scores, random_scores
from .tvs import eps_ratios, tvs_scores

__all__ = ["ChannelScores", "Criterion", "register_criterion", "get_criterion", "list_criteria",
           "resolve_criterion", "l1_scores", "random_scores", "dfpc_scores", "dfpc_mean_scores", "bn_factor",
           "closed_form_score", "UnsupportedLayerError", "tvs_scores", "eps_ratios", "collect_statistics",
           "filter_scores", "ClassStatistics", "ChannelMoments"]
