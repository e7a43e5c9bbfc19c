"""``python -m pruning_lib.train`` (console script ``pruning-course-train``): train a CIFAR-10
model with a named recipe. The code lives in :mod:`pruning_lib.course.training`."""
from .course.training import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
