"""pruning_lib: data-free structured pruning of CNNs, after DFPC and TVSPrune (ICLR 2023)."""
__version__ = "0.1.0"
