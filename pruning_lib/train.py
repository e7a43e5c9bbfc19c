"""``python -m pruning_lib.train`` (console script ``pruning-course-train``): train a CIFAR-10
model with a named recipe. The code lives in :mod:`pruning_lib.course.training`.

The same command runs on several GPUs (or CPU processes) under torchrun, with DistributedDataParallel:
``torchrun --standalone --nproc-per-node 4 -m pruning_lib.train --recipe paper --arch cifar_resnet50 --out ...``;
``--batch-size`` and ``--lr`` stay the global batch and its learning rate (see ``docs/multi_gpu.md``)."""
from .course.training import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
