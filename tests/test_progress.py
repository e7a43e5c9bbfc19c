"""A loop stopped early by its target closes its bar complete, with the reason (not frozen mid-way, red)."""
import io

from tqdm import tqdm

from pruning_lib.progress import close_bar


def test_a_bar_stopped_early_closes_full_with_its_reason():
    out = io.StringIO()
    bar = tqdm(total=10, file=out, desc="pruning")
    bar.update(2)
    close_bar(bar, "accuracy drop above 5.0 points")
    assert bar.total == 2 and bar.n == 2
    last = out.getvalue().split("\r")[-1]
    assert "100%" in last and "stopped: accuracy drop above 5.0 points" in last


def test_a_finished_or_disabled_bar_is_just_closed():
    out = io.StringIO()
    bar = tqdm(total=3, file=out)
    bar.update(3)
    close_bar(bar)
    assert bar.total == 3 and "stopped" not in out.getvalue()
    quiet = tqdm(total=3, disable=True)
    close_bar(quiet, "x")          # no error, nothing shown
    close_bar(None, "x")
