"""Progress bars that end the way the loop ended: a loop stopped early by its target or gate is a
finished run, not a crash, so its bar closes full, with the reason, instead of frozen red mid-way."""
from __future__ import annotations

__all__ = ["close_bar"]


def close_bar(bar, reason: str | None = None) -> None:
    """Close a ``tqdm.auto`` bar at the step it reached, as complete, showing ``reason`` (if given)."""
    if bar is None:
        return
    if not getattr(bar, "disable", False):
        if reason:
            bar.set_postfix_str(f"stopped: {reason}", refresh=False)
        if bar.total and bar.n < bar.total:
            bar.total = bar.n        # the text bar (and tqdm's 'danger' check) now read it as complete
            for widget in getattr(getattr(bar, "container", None), "children", ()):
                if hasattr(widget, "max") and hasattr(widget, "bar_style"):   # the notebook bar's IntProgress
                    widget.max = max(bar.n, 1)
        bar.refresh()
    bar.close()
