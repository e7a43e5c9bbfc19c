"""The layer handlers, at their earlier path: they live in :mod:`pruning_lib.layers` (the layer
below discovery and surgery, so that the two depend one way). Kept for code written against this path."""
from ..layers import *  # noqa: F401,F403
from ..layers import __all__  # noqa: F401
from ..layers import _REGISTRY, _USER_TYPES  # noqa: F401  (the registry, for tests that restore it)
