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
            n = bar.n                # tqdm's public reset: the text and the notebook bar now read it as complete
            bar.reset(total=max(n, 1))
            bar.update(n)
        bar.refresh()
    bar.close()
