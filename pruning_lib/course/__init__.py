"""The course's CIFAR-10 corner: data splits and their batching (:mod:`.data`), the CIFAR ResNets
(:mod:`.models`), training recipes (:mod:`.training`) and checkpoints (:mod:`.checkpoints`)."""

__all__: list[str] = []
