"""A user's own CNN and DataLoader through DFPC and TVSPrune with the top-level API alone (issue #18)."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib as pl

SHAPE = (1, 3, 16, 16)


class SmallCNN(nn.Module):
    """A user's network: a stem, one residual block (a coupled stream) and a classifier."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        x = torch.relu(x + y)
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(60, 3, 16, 16)
    y = torch.arange(60) % 3
    x += y[:, None, None, None] * 0.5                # classes a filter can tell apart
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return model, loader


def accuracy(model):
    """A user's own evaluate(model) -> float: here a fixed number, so every step is accepted."""
    return 50.0


def test_top_level_names_and_all():
    assert {"discover", "prune", "global_prune", "dfpc_scores", "l1_scores", "tvs_scores", "tvs_prune",
            "iter_tvs_prune", "bn_recalibrate", "Target", "count_parameters", "count_flops",
            "compare_latency", "evaluate"} <= set(pl.__all__)
    assert all(hasattr(pl, n) for n in pl.__all__)
    assert {"dfpc", "l1", "random", "tvs"} <= set(pl.list_criteria())
    assert pl.get_criterion("tvs") is pl.tvs_scores


def test_dfpc_with_a_dataloader(setup):
    model, loader = setup
    before = copy.deepcopy(model.state_dict())
    graph = pl.discover(model, SHAPE)
    assert graph.num_coupled >= 1
    res = pl.global_prune(model, pl.Target(parameters=0.3), criterion=pl.dfpc_scores, evaluate=loader,
                          input_shape=SHAPE, step_fraction=0.1, progress=False)
    p0, p1 = pl.count_parameters(model), pl.count_parameters(res.model)
    assert p1 <= 0.7 * p0 and res.stop_reason.startswith("parameters")
    counts0, counts1 = pl.channel_counts(model), pl.channel_counts(res.model)
    assert any(counts1[k] < counts0[k] for k in counts0)
    assert p1 == pl.predicted_parameters(model, res.graph, res.removals())
    out = res.model(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    assert res.report.accuracy_split == "DataLoader" and res.report.base.accuracy is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())     # caller's model untouched
    assert pl.count_flops(res.model, SHAPE) < pl.count_flops(model, SHAPE)


def test_registry_name_and_input_shape_from_data(setup):
    model, loader = setup
    res = pl.global_prune(model, pl.Target(channels=0.25), criterion="l1", data=loader, step_fraction=0.25, progress=False)
    assert res.report.info["input_shape"] == [1, 3, 16, 16]
    assert pl.count_parameters(res.model) < pl.count_parameters(model)


def test_tvs_scores_and_global_prune_by_tvs(setup):
    model, loader = setup
    graph = pl.discover(model, SHAPE)
    scores = pl.tvs_scores(model, graph, data=loader)
    assert set(scores.scores) == set(graph.dfcs)
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.scores.values())
    res = pl.global_prune(model, pl.Target(channels=0.3), criterion="tvs", data=loader, step_fraction=0.3, progress=False)
    assert res.scores.method.startswith("tvs") and pl.count_parameters(res.model) < pl.count_parameters(model)


def test_iter_tvs_prune_and_bn_recalibrate_with_a_loader(setup):
    model, loader = setup
    before = copy.deepcopy(model.state_dict())
    res = pl.iter_tvs_prune(model, pl.Target(parameters=0.1), data=loader, evaluate=accuracy, eps0=2.0, input_shape=SHAPE)
    assert res.sparsity > 0 and res.report.final.parameters == pl.count_parameters(res.model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    counts = pl.channel_counts(res.model)
    assert any(counts[k] < v for k, v in pl.channel_counts(model).items())
    fixed = pl.bn_recalibrate(res.model, data=loader)
    assert fixed is not res.model
    assert not torch.equal(fixed.bn1.running_mean, res.model.bn1.running_mean)
    out = fixed(torch.randn(2, 3, 16, 16))
    assert torch.isfinite(out).all()
    acc = pl.evaluate(fixed, loader)
    assert 0.0 <= acc <= 100.0


def test_one_shot_tvs_prune_with_a_loader(setup):
    model, loader = setup
    res = pl.tvs_prune(model, 1.5, data=loader, input_shape=SHAPE)
    assert res.parameters_after < res.parameters_before == pl.count_parameters(model)
    assert res.parameters_after == pl.count_parameters(res.model)


def test_target_vocabulary():
    assert pl.Target(parameters=0.3).kept("parameters") == pytest.approx(0.7)
    assert not hasattr(pl, "PruningTarget")          # one vocabulary: fractions REMOVED
    with pytest.raises(ValueError, match="REMOVE"):
        pl.Target(parameters=1.5)


def test_bad_data_sources_say_what_to_do(setup):
    model, _ = setup
    with pytest.raises(pl.DataSourceError, match="TensorDataset"):
        pl.evaluate(model, torch.randn(4, 3, 16, 16))
    with pytest.raises(pl.DataSourceError, match="not an .inputs, labels. pair"):
        pl.evaluate(model, [torch.randn(4, 3, 16, 16)])
    with pytest.raises(pl.DataSourceError, match="not a tensor"):
        pl.evaluate(model, [([1, 2], torch.tensor([0, 1]))])
    with pytest.raises(pl.DataSourceError, match="only once"):
        pl.tvs_scores(model, data=iter([(torch.randn(4, 3, 16, 16), torch.arange(4) % 3)]), input_shape=SHAPE)
    with pytest.raises(pl.DataSourceError, match="augmentation"):
        pl.bn_recalibrate(model, data=DataLoader(TensorDataset(torch.randn(4, 3, 16, 16), torch.arange(4))), augment=True)


def test_a_pruned_model_saves_and_reloads_into_a_fresh_one(setup, tmp_path):
    """state_dict of the pruned model -> pl.resize_to_state on the unpruned architecture -> same outputs."""
    model, _ = setup
    res = pl.global_prune(model, pl.Target(parameters=0.3), criterion="dfpc", input_shape=SHAPE, step_fraction=0.1,
                          progress=False)
    torch.save(res.model.state_dict(), tmp_path / "pruned.pt")
    state = torch.load(tmp_path / "pruned.pt", weights_only=True)
    fresh = SmallCNN().eval()
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(state)                  # the thinner layers do not fit the constructor's
    pl.resize_to_state(fresh, state)
    fresh.load_state_dict(state)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(fresh(x), res.model(x))
    assert pl.count_parameters(fresh) == pl.count_parameters(res.model) < pl.count_parameters(model)


@pytest.mark.parametrize("call, argument", [
    (lambda m: pl.tvs_scores(m, input_shape=SHAPE), "tvs_scores .* needs data="),
    (lambda m: pl.global_prune(m, pl.Target(parameters=0.3), criterion="tvs", input_shape=SHAPE, progress=False),
     "tvs_scores .* needs data="),
    (lambda m: pl.collect_statistics(m), "collect_statistics needs data="),
    (lambda m: pl.bn_recalibrate(m), "bn_recalibrate needs data="),
    (lambda m: pl.tvs_prune(m, input_shape=SHAPE), "tvs_scores .* needs data="),
    (lambda m: pl.iter_tvs_prune(m, pl.Target(parameters=0.1), input_shape=SHAPE), "iter_tvs_prune .* needs data="),
    (lambda m: pl.global_prune(m, pl.Target(accuracy_drop=1.0), criterion="l1", input_shape=SHAPE, progress=False),
     "accuracy target .* needs evaluate="),
])
def test_no_default_data_set(setup, call, argument):
    """The generic verbs read no course split by default: a missing data source names the argument."""
    with pytest.raises(ValueError, match=argument):
        call(setup[0])


def test_a_reporting_only_source_is_refused_where_a_verb_decides(setup):
    model, loader = setup[0], setup[1]

    class Held(list):
        name, reporting_only = "test[200]", True

    test = Held(loader)
    with pytest.raises(ValueError, match=r"evaluate='test\[200\]' is for reporting only"):
        pl.iter_tvs_prune(model, pl.Target(parameters=0.1), data=loader, evaluate=test, input_shape=SHAPE)
    with pytest.raises(ValueError, match="data='test.200.' is for reporting only"):
        pl.global_prune(model, pl.Target(parameters=0.1), criterion="tvs", data=test, input_shape=SHAPE, progress=False)
    r = pl.global_prune(model, pl.Target(parameters=0.1, accuracy_drop=50), criterion="l1", evaluate=test, input_shape=SHAPE,
                        progress=False)
    assert r.report.accuracy_split == "test[200]"     # DFPC's curves stop on a test-accuracy drop (the paper's protocol)


def test_the_course_test_split_and_its_subsets_are_reporting_only():
    from pruning_lib.course.data import CIFAR10Split
    x, y = torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.arange(20) % 10
    assert CIFAR10Split("test", x, y, "official").reporting_only
    assert CIFAR10Split("test", x, y, "official").subset(10).reporting_only
    assert not CIFAR10Split("val", x, y, "official").reporting_only
