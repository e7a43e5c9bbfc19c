"""Calls in the earlier argument order (before one verb shape, issue #26) run for one release with a
LegacyCallWarning naming the current call, and give what the current call gives; the course itself never
makes them (pyproject's pytest settings turn the warning into an error everywhere else)."""
import importlib
import sys

import pytest
import torch
from torch import nn

import pruning_lib as pl
from pruning_lib import layers
from pruning_lib.legacy import LegacyCallWarning
from test_robustness import S, loader, small


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("verb", ["global_prune", "prune_and_repair"])
def test_criterion_before_target(verb):
    target = pl.Target(parameters=0.3)
    extra = {"data": loader(), "repairs": ("bn",)} if verb == "prune_and_repair" else {}
    now = getattr(pl, verb)(small(), target, criterion="l1", input_shape=S, step_fraction=0.1, **extra)
    with pytest.warns(LegacyCallWarning, match=rf"{verb}\(model, target, criterion=\.\.\.\)"):
        then = getattr(pl, verb)(small(), "l1", target, input_shape=S, step_fraction=0.1, **extra)
    assert then.removed == now.removed and same(then.model, now.model)


def test_tvs_prune_graph_and_data_by_position():
    m = small()
    g = pl.discover(m, S)
    now = pl.tvs_prune(m, 0.5, data=loader(), graph=g)
    with pytest.warns(LegacyCallWarning, match=r"tvs_prune\(model, graph, data, eps\)"):
        then = pl.tvs_prune(m, g, loader(), 0.5)
    assert then.removed == now.removed and same(then.model, now.model)


def test_iter_tvs_prune_data_evaluate_target_by_position():
    always = lambda model: 90.0                         # noqa: E731  (a gate that always passes)
    target = pl.Target(parameters=0.2, accuracy_drop=1.0)
    now = pl.iter_tvs_prune(small(), target, data=loader(), evaluate=always, input_shape=S, max_iterations=3)
    with pytest.warns(LegacyCallWarning, match=r"iter_tvs_prune\(model, target, data=\.\.\., evaluate=\.\.\.\)"):
        then = pl.iter_tvs_prune(small(), loader(), always, target, input_shape=S, max_iterations=3)
    assert then.removed == now.removed and same(then.model, now.model)


def test_bn_recalibrate_data_by_position():
    now = pl.bn_recalibrate(small(), data=loader())
    with pytest.warns(LegacyCallWarning, match=r"bn_recalibrate\(model, data=\.\.\.\)"):
        then = pl.bn_recalibrate(small(), loader())
    assert same(then, now)


def test_one_argument_by_position_and_by_name_is_refused():
    with pytest.raises(TypeError, match=r"\['target'\] both by position .* and by name"):
        pl.global_prune(small(), "l1", pl.Target(parameters=0.3), target=pl.Target(), input_shape=S)
    with pytest.raises(TypeError, match="positional arguments; call it as"):
        pl.bn_recalibrate(small(), *[None] * 10)


def test_current_calls_do_not_warn():
    """A current call, including a wrong target, never goes through the earlier-order path."""
    with pytest.raises(TypeError, match="target must be a pruning_lib.Target, got float"):
        pl.global_prune(small(), 0.3, input_shape=S)
    pl.global_prune(small(), pl.Target(parameters=0.2), criterion="l1", input_shape=S, step_fraction=0.1)


def test_surgery_handlers_is_the_layers_module_with_a_warning():
    sys.modules.pop("pruning_lib.surgery.handlers", None)
    with pytest.warns(LegacyCallWarning, match="import from pruning_lib.layers"):
        old = importlib.import_module("pruning_lib.surgery.handlers")
    assert old.LayerHandler is layers.LayerHandler and old.CHANNELWISE == layers.CHANNELWISE
    assert old.register_handler is layers.register_handler


def test_removals_is_a_mapping_and_a_call():
    """``result.removals``: the accepted step's channels by DFC; ``result.removals(step)``: another step's."""
    r = pl.global_prune(small(), pl.Target(parameters=0.5), criterion="l1", input_shape=S, step_fraction=0.1)
    assert dict(r.removals) == r.removals() and sum(map(len, r.removals.values())) == r.channels_removed
    assert r.removals(0) == {} and r.removals(r.accepted_step) == r.removals()
    one = pl.tvs_prune(small(), 0.5, data=loader(), input_shape=S)
    assert dict(one.removals) == one.removals()
    with pytest.raises(TypeError, match="accepted step's removals only"):
        one.removals(0)
