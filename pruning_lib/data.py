"""``python -m pruning_lib.data`` (console script ``pruning-course-data``): prepare the course's
CIFAR-10 cache. The code lives in :mod:`pruning_lib.course.data` (its command line: :mod:`pruning_lib.course.data.cli`)."""
from .course.data.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
