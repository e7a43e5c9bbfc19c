"""Earlier home of the layer handlers, kept for one release: import :mod:`pruning_lib.layers` instead
(the same names). Importing this module gives a :class:`~pruning_lib.legacy.LegacyCallWarning`."""
import warnings

from ..layers import *  # noqa: F401,F403  (the same objects, not copies: registering through either works)
from ..layers import __all__  # noqa: F401
from ..legacy import REMOVED_IN, LegacyCallWarning

warnings.warn(f"pruning_lib.surgery.handlers is the earlier name of pruning_lib.layers and stops working in "
              f"pruning_lib {REMOVED_IN}; import from pruning_lib.layers (docs/import_map.md)",
              LegacyCallWarning, stacklevel=2)
