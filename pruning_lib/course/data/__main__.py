"""``python -m pruning_lib.course.data``: the same command line as ``python -m pruning_lib.data``."""
from .cli import main

__all__ = ["main"]

main()
