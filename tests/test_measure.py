"""measure: parameter and FLOP counts match hand-computed values; latency runs leave models as they were."""
import pytest
import torch
from torch import nn

from pruning_lib.measure import (LatencyResult, compare_latency, count_flops, count_parameters,
                                 measure_latency, speedups)
from pruning_lib.course.models import get_model


def small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_parameter_count_by_hand():
    assert count_parameters(small_net()) == 3 * 8 * 9 + 2 * 8 + 8 * 10 + 10


def test_flops_by_hand():
    # conv: 2 * (8 * 32 * 32 outputs) * (3 * 9 MACs each); linear: 2 * 8 * 10
    assert count_flops(small_net(), (1, 3, 32, 32)) == 2 * 8 * 32 * 32 * 27 + 2 * 8 * 10
    # per image: a batch of 4 costs 4 times as much
    assert count_flops(small_net(), (4, 3, 32, 32)) == 4 * count_flops(small_net(), (1, 3, 32, 32))


def test_flops_resnet20_known_value():
    # CIFAR ResNet-20 is about 41 M multiply-adds per 32x32 image
    assert 40e6 < count_flops(get_model("resnet20"), (1, 3, 32, 32)) / 2 < 42e6


def test_flops_and_latency_restore_training_mode():
    m = small_net().train()
    count_flops(m, (1, 3, 32, 32))
    measure_latency(m, (2, 3, 32, 32), warmup=1, repeats=2)
    assert m.training
    m.eval()
    measure_latency(m, (2, 3, 32, 32), warmup=1, repeats=2)
    assert not m.training


def test_compare_latency_and_speedups():
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    res = compare_latency({"big": big, "tiny": tiny}, (8, 3, 32, 32), warmup=1, repeats=5, threads=1)
    assert set(res) == {"big", "tiny"}
    for r in res.values():
        assert isinstance(r, LatencyResult)
        assert r.repeats == 5 and r.batch_size == 8 and r.threads == 1
        assert 0 < r.q1_ms <= r.median_ms <= r.q3_ms
    s = speedups(res, "big")
    assert s["big"] == 1.0
    assert s["tiny"] == pytest.approx(res["big"].median_ms / res["tiny"].median_ms)
    with pytest.raises(KeyError, match="baseline"):
        speedups(res, "missing")
    for r in res.values():                               # DFPC's GPU protocol reports the mean
        assert r.mean_ms > 0 and r.q1_ms <= r.median_ms
    m = speedups(res, "big", statistic="mean")
    assert m["tiny"] == pytest.approx(res["big"].mean_ms / res["tiny"].mean_ms)
    with pytest.raises(ValueError, match="statistic"):
        speedups(res, "big", statistic="max")


def test_thread_count_restored():
    before = torch.get_num_threads()
    measure_latency(small_net(), (1, 3, 32, 32), warmup=0, repeats=1, threads=1)
    assert torch.get_num_threads() == before
