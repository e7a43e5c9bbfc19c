"""The channel graph: data flow couplings (DFCs) found on a model's ``torch.fx`` trace (DFPC, Narshana
et al., ICLR 2023). :func:`discover` is the entry point; :mod:`.types` holds what it returns."""
from .discovery import discover
from .tracing import trace
from .types import (DEPENDENT, DFC, FEED_IN, FEED_OUT, GROUPED_IN, HEAD_IN, HEAD_OUT, PARAM, ChannelGraph, ChannelRef,
                    UntraceableModelError)

__all__ = ["discover", "trace", "ChannelGraph", "DFC", "ChannelRef", "UntraceableModelError", "FEED_IN",
           "DEPENDENT", "FEED_OUT", "GROUPED_IN", "PARAM", "HEAD_IN", "HEAD_OUT"]
