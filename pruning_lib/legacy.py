"""Calls in an earlier release's shape keep working for one release, each with a
:class:`LegacyCallWarning` that spells out the current call.

Only the *order* of arguments changed for these verbs (issue #26 made every verb ``verb(model, target,
*, criterion=, data=, ...)``); a call in the earlier positional order is rebound by name and run, never
guessed at: a verb declares the names its earlier positions had and a test that recognises such a call.
Removed *names* (``PruningTarget``, ``eval_split=``, ...) are not kept: docs/import_map.md lists them.
The course never calls the earlier shapes (its test suite turns this warning into an error).
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

REMOVED_IN = "0.3"


class LegacyCallWarning(FutureWarning):
    """A call in an earlier release's argument order; it runs, and stops working in :data:`REMOVED_IN`."""


def earlier_positions(names: Sequence[str], is_earlier: Callable[[tuple], bool], current: str):
    """Decorate a verb whose first argument is the model: when ``is_earlier(args)`` says the positional
    arguments after the model follow the earlier order ``names``, pass them by those names instead,
    with a :class:`LegacyCallWarning` naming ``current`` (the current call, for the message)."""
    def wrap(fn):
        @functools.wraps(fn)
        def verb(*args, **kwargs):
            if len(args) < 2 or not is_earlier(args):
                return fn(*args, **kwargs)
            if len(args) - 1 > len(names):
                raise TypeError(f"{fn.__name__}() got {len(args)} positional arguments; call it as {current}")
            moved = dict(zip(names, args[1:]))
            twice = sorted(moved.keys() & kwargs.keys())
            if twice:
                raise TypeError(f"{fn.__name__}() got {twice} both by position (the earlier order) and by "
                                f"name; call it as {current}")
            warnings.warn(f"{fn.__name__}({', '.join(['model', *list(moved)])}) by position is the earlier "
                          f"order and stops working in pruning_lib {REMOVED_IN}; call {current} "
                          "(docs/import_map.md)", LegacyCallWarning, stacklevel=2)
            return fn(args[0], **moved, **kwargs)
        return verb
    return wrap


__all__ = ["LegacyCallWarning", "earlier_positions", "REMOVED_IN"]
