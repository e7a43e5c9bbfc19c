"""The global pruning loop: order, DFC floors, targets, the coupled switch, the report, no side effects."""
from __future__ import annotations

import pytest
import torch

from pruning_lib.graph import discover
from pruning_lib.scoring import l1_scores
from pruning_lib.course.data import CIFAR10Split
from pruning_lib.pruning import Target, global_prune, removal_order
from pruning_lib.measure import count_flops, count_parameters
from pruning_lib.course.models import get_model
from pruning_lib.surgery import predicted_parameters

SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = get_model("resnet20").eval()
    g = torch.Generator().manual_seed(1)
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
        bn.weight.data = torch.rand(bn.num_features, generator=g) + 0.1
        bn.running_var = torch.rand(bn.num_features, generator=g) + 0.5
    return m


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_never_empties_a_dfc_and_leaves_the_caller_alone(model):
    before = _state(model)
    r = global_prune(model, Target(channels=1.0), criterion="dfpc", step_fraction=0.25, input_shape=SHAPE,
                     progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert r.stop_reason.startswith("every eligible channel")
    final = r.removals(r.report.final.step)
    for dfc in r.graph.dfcs:                                   # exactly one channel left in each DFC
        assert len(final[dfc]) == dfc.channels - 1
        kept = (set(range(dfc.channels)) - set(final[dfc])).pop()
        assert kept == int(torch.argmax(r.scores[dfc]))        # the best-scoring one
    out = r.model(torch.randn(2, *SHAPE[1:]))
    assert out.shape == (2, 10)
    assert discover(r.model, SHAPE).num_channels == len(r.graph.dfcs)


def test_order_is_global_and_ascending(model):
    graph = discover(model, SHAPE)
    scores = l1_scores(model, graph)
    order = removal_order(scores, graph.dfcs)
    vals = [float(scores[d][k]) for d, k in order]
    assert vals == sorted(vals)
    assert len(order) == graph.num_channels - len(graph.dfcs)


@pytest.mark.parametrize("kind", ["parameters", "flops"])
def test_stops_at_a_size_target(model, kind):
    r = global_prune(model, Target(**{kind: 0.4}), criterion="l1", step_fraction=0.05, input_shape=SHAPE,
                     progress=False)
    steps = r.report.steps
    value = lambda s: getattr(s, kind)                         # noqa: E731
    assert value(steps[-1]) <= 0.6 * value(steps[0]) < value(steps[-2])
    assert r.accepted_step == steps[-1].step and steps[-1].note == "target reached"
    assert count_parameters(r.model) == steps[-1].parameters


def test_report_is_consistent(model):
    r = global_prune(model, Target(channels=0.5), criterion="random", step_fraction=0.1, input_shape=SHAPE,
                     progress=False, name="resnet20")
    info, steps = r.report.info, r.report.steps
    assert info["eligible_channels"] == 448 and info["channels_per_step"] == 45
    assert [s.step for s in steps] == list(range(len(steps)))
    assert steps[-1].channels_removed == int(0.5 * 448)
    for s in steps[1:]:
        m = r.model_at(s.step)
        assert count_parameters(m) == s.parameters == predicted_parameters(r.original, r.graph, r.removals(s.step))
        assert count_flops(m, SHAPE) == s.flops
        assert sum(len(v) for v in r.removals(s.step).values()) == s.channels_removed
    assert [x["parameters"] for x in r.report.rows()] == sorted((s.parameters for s in steps), reverse=True)
    assert "random on resnet20" in r.report.table()


def test_coupled_switch(model):
    r = global_prune(model, Target(channels=0.8), criterion="dfpc", step_fraction=0.2, coupled=False,
                     input_shape=SHAPE, progress=False)
    assert r.report.info["eligible_dfcs"] == 9 and r.report.info["eligible_channels"] == 448 - 16 - 32 - 64
    removed = r.removals(r.report.final.step)
    assert removed and not any(d.coupled for d in removed)
    for d in r.graph.dfcs:                                     # the residual streams keep every channel
        if d.coupled:
            for a in d.A:
                assert r.model.get_submodule(a).out_channels == d.channels
    rc = global_prune(model, Target(channels=0.8), criterion="dfpc", step_fraction=0.2, input_shape=SHAPE,
                      progress=False)
    assert any(d.coupled for d in rc.removals(rc.report.final.step))


def test_alignment_keeps_multiples(model):
    r = global_prune(model, Target(channels=0.6), criterion="dfpc", step_fraction=0.2, align=8, input_shape=SHAPE,
                     progress=False)
    for s in r.report.steps[1:]:
        removed = r.removals(s.step)
        assert sum(len(v) for v in removed.values()) == s.channels_removed
        for dfc, ks in removed.items():
            assert (dfc.channels - len(ks)) % 8 == 0 and len(ks) < dfc.channels
        assert count_parameters(r.model_at(s.step)) == s.parameters
    assert r.report.final.channels_removed > 0


def test_accuracy_drop_target_keeps_the_last_step_within_budget(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (100, 3, 16, 16), dtype=torch.uint8, generator=g)
    with torch.no_grad():                       # labels: the unpruned model's own predictions (100 %)
        from pruning_lib.course.data import normalize
        y = model(normalize(x)).argmax(1)
    split = CIFAR10Split("agree", x, y, "synthetic")
    r = global_prune(model, Target(accuracy_drop=10.0), criterion="l1", step_fraction=0.05, input_shape=SHAPE,
                     evaluate=split, progress=False)
    steps = r.report.steps
    assert steps[0].accuracy == 100.0 and r.report.accuracy_split == "agree"
    assert steps[-1].note == "beyond the accuracy-drop target" and 100.0 - steps[-1].accuracy > 10.0
    assert r.accepted_step == steps[-2].step and 100.0 - steps[-2].accuracy <= 10.0
    assert count_parameters(r.model) == steps[-2].parameters


def test_latency_is_measured_against_the_unpruned_model(model):
    r = global_prune(model, Target(speedup=50.0), criterion="l1", step_fraction=0.3, input_shape=SHAPE,
                     latency_shape=(4, 3, 16, 16), latency_repeats=2, max_steps=2, progress=False)
    steps = r.report.steps
    assert steps[0].speedup == 1.0
    assert all(s.latency_ms > 0 and s.speedup > 0 for s in steps)
    assert r.stop_reason == "max_steps=2 reached"


def test_bad_requests_are_explained(model):
    with pytest.raises(ValueError, match="step_fraction"):
        global_prune(model, criterion="l1", step_fraction=0, input_shape=SHAPE)
    with pytest.raises(ValueError, match="fraction to REMOVE"):
        Target(parameters=50)
    with pytest.raises(ValueError, match="unknown criterion"):
        global_prune(model, criterion="hessian", input_shape=SHAPE)
