"""pruning_lib: data-free structured pruning of CNNs, after DFPC and TVSPrune (ICLR 2023)."""
import os as _os

# OpenMP threads that spin while waiting collapse when the CPU is shared (a laptop running other work,
# two notebooks at once): measured here, a ResNet-20 batch took over 10x longer with 2 spinning threads
# than with 1. Passive waiting avoids that and costs nothing measurable on an idle machine. It only
# takes effect if set before torch is first imported; an explicit setting in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
