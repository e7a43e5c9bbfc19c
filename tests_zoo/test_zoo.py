"""Every torchvision classification model up to a size limit (issue 30): discovered at a small input
(224 only where the model needs it), then random channels of up to ``ZOO_DFCS`` DFCs (default 4)
pruned together and checked exact in float64 (pruned == the original with the removed channels'
readers zeroed). Random weights: nothing is downloaded. ``make test-zoo`` runs it and writes the
per-model report (DFCs, coupled, share of channels prunable, refused spaces with their reasons) to
``build/zoo/report.md``.

``ZOO_MAX_PARAMS`` (default 150e6) is the size limit: larger models (convnext_large, vit_l_*, vit_h_14,
regnet_y_128gf) take minutes in float64 on a laptop's CPU and hold several GB; they are reported as
skipped by size. ``ZOO_MODELS`` (comma-separated) runs only those.
"""
from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import get_model

from pruning_lib.graph import discover
from toy_models import assert_exact_prune

MAX_PARAMS = float(os.environ.get("ZOO_MAX_PARAMS", "150e6"))
MAX_DFCS = int(os.environ.get("ZOO_DFCS", "4"))
SIZES_TRIED = ((1, 3, 64, 64), (1, 3, 224, 224), (1, 3, 299, 299))   # 299: Inception-v3's auxiliary head
REPORT = Path(os.environ.get("ZOO_REPORT", "build/zoo/report.md"))
ROWS: dict[str, dict] = {}


def _names() -> list[str]:
    names = torchvision.models.list_models(module=torchvision.models)
    only = os.environ.get("ZOO_MODELS")
    return [n for n in names if n in only.split(",")] if only else names


def _size(name: str) -> int:
    """Parameters, from the weights' metadata (nothing downloaded), else counted on a meta build."""
    try:
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])
    except (ValueError, KeyError, AttributeError):
        with torch.device("meta"):
            return sum(p.numel() for p in get_model(name).parameters())


SIZES = {n: _size(n) for n in _names()}
IN_LIMIT = [n for n in SIZES if SIZES[n] <= MAX_PARAMS]


def _short(reason: str) -> str:
    """A reason without node names and module paths, so equal causes count once."""
    reason = reason.split("; discover(..., inexact_norms")[0]
    reason = re.sub(r" at node '[^']*'", "", reason)
    reason = re.sub(r"\b(LayerNorm|Linear|module|nn.MultiheadAttention|attention) [\w.]+", r"\1", reason)
    reason = re.sub(r"\s*\((layer_norm|LayerNorm)\)", "", reason)
    return reason if len(reason) <= 160 else reason[:157].rsplit(" ", 1)[0] + " ..."


def _discover(model):
    """The graph at the smallest input the model runs on (ViT and MaxViT need 224, Inception-v3 299)."""
    for shape in SIZES_TRIED:
        try:
            return shape, discover(model, shape)
        except ValueError as e:
            if "failed" not in str(e) or shape == SIZES_TRIED[-1]:
                raise


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Channel graph over torchvision's classification zoo", "",
             f"torch {torch.__version__}, torchvision {torchvision.__version__}; random weights, float64; "
             f"up to {MAX_DFCS} DFCs pruned together per model and checked exact.", "",
             "| model | params (M) | input | DFCs | coupled | by groups | prunable channels | share | pruned | s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|---:|"]
    for n, r in ROWS.items():
        lines.append(f"| {n} | {r['params'] / 1e6:.1f} | {r['input']} | {r['dfcs']} | {r['coupled']} | {r['grouped']} | "
                     f"{r['prunable']} / {r['channels']} | {r['share']:.0%} | {r['pruned']} | {r['seconds']:.1f} |")
    skipped = [n for n in SIZES if n not in IN_LIMIT]
    if skipped:
        lines += ["", f"Skipped by size (over {MAX_PARAMS / 1e6:.0f}M parameters): "
                  + ", ".join(f"{n} ({SIZES[n] / 1e6:.0f}M)" for n in skipped)]
    lines += ["", "## Refused spaces, by model (distinct reasons, with how many spaces give each)", ""]
    for n, r in ROWS.items():
        lines.append(f"- **{n}**: " + "; ".join(f"{why} (x{k})" for why, k in r["reasons"].items()))
    REPORT.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", IN_LIMIT)
def test_zoo_model_prunes_exactly(name):
    start = time.perf_counter()
    torch.manual_seed(0)
    model = get_model(name, weights=None).eval()
    shape, g = _discover(model)
    spaces = [d for d in g.dfcs + g.unprunable + g.grouped if d.feed_in]    # not the network input
    channels = sum(d.channels * max((r.block for r in d.feed_in), default=1) for d in spaces)
    prunable = sum(d.channels * max((r.block for r in d.feed_in), default=1) for d in g.dfcs + g.grouped)
    reasons: dict[str, int] = {}
    for d in g.unprunable:
        for why in {_short(w) for w in d.reasons}:
            reasons[why] = reasons.get(why, 0) + 1
    rng = random.Random(name)
    choice = rng.sample(g.dfcs + g.grouped, min(MAX_DFCS, len(g.dfcs) + len(g.grouped)))
    removals = {d.index: sorted(rng.sample(range(d.channels), max(1, d.channels // 3)))
                for d in choice if d.channels > 1}
    if removals:
        assert_exact_prune(model, g, removals, shape, what=name)
    every = g.dfcs + g.unprunable + g.grouped
    ROWS[name] = dict(params=SIZES[name], input=f"{shape[2]}x{shape[3]}", dfcs=len(g.dfcs), coupled=g.num_coupled,
                      grouped=len(g.grouped), prunable=prunable, channels=channels,
                      share=prunable / channels if channels else 0.0,
                      pruned=", ".join(f"#{k}: {len(v)}/{every[k].channels}" for k, v in removals.items()),
                      seconds=time.perf_counter() - start, reasons=reasons)
    assert g.dfcs or g.grouped, f"{name}: no prunable DFC at all"
