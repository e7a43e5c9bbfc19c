"""Measures of a model as it really is: accuracy on any data source (:mod:`.accuracy`), parameters and FLOPs (:mod:`.counts`), latency and measured
speedups (:mod:`.latency`), and the time and MACs spent on coupled channels (:mod:`.layer_time`). (What one channel of each
DFC costs, against a criterion's removal order, is :mod:`pruning_lib.pruning.channel_cost`.)"""
from .accuracy import evaluate
from .counts import count_flops, count_parameters
from .latency import LatencyResult, compare_latency, measure_latency, speedups
from .layer_time import (CoupledMacShare, CoupledTimeShare, coupled_layers, coupled_mac_share,
                         coupled_time_share, layer_macs)

__all__ = ["evaluate", "count_parameters", "count_flops", "LatencyResult", "measure_latency", "compare_latency", "speedups",
           "CoupledMacShare", "CoupledTimeShare", "coupled_layers", "coupled_mac_share", "coupled_time_share",
           "layer_macs"]
