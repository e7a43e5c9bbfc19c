"""``python -m pruning_lib.data`` (console script ``pruning-course-data``): prepare the course's
CIFAR-10 cache. The code lives in :mod:`pruning_lib.course.data`."""
from .course.data import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
