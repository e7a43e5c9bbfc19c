"""Physical channel surgery: layers really become smaller (DFPC, Narshana et al., ICLR 2023, section 3).

:mod:`pruning_lib.layers` holds one handler per layer type (channel sizes, shrink, parameters,
MACs, rebuilding from a state_dict); :mod:`.prune` turns a DFC
removal plan into cuts of those layers.
"""
from ..layers import (LayerHandler, PruningError, handler_for, is_batchnorm, is_weighted, kind_of,
                       register_handler)
from .prune import (OutputChange, channel_counts, check_graph, output_change, plan, predicted_parameters, prune,
                    resize_to_state, shrink_module)

__all__ = ["prune", "plan", "predicted_parameters", "check_graph", "shrink_module", "channel_counts",
           "resize_to_state", "PruningError", "LayerHandler", "handler_for", "kind_of", "is_weighted",
           "is_batchnorm", "register_handler", "output_change", "OutputChange"]
