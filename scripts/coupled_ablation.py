"""The coupled-channel ablation (issue 20, item 5): why pruning coupled channels does or does not buy
speed on a checkpoint. Writes ``data/results/coupled_ablation_<model>.json``.

    python scripts/coupled_ablation.py --model resnet56
    python scripts/coupled_ablation.py --model paper/resnet20

For the checkpoint it records
- per DFC: stage (by resolution), stream (coupled) or block, and the FLOPs and parameters one channel
  costs (physical one-channel prunes, :func:`pruning_lib.pruning.channel_cost.dfc_costs`);
- the BatchNorm |gamma| summary (median, share below 0.1, dead channels) the recipe left;
- per criterion (DFPC's sums, DFPC mean-normalised, L1): where the first coupled channel comes in the
  global removal order and where the first 10 % of removals fall;
- measured time: for each place (stream/block by stage), a quarter of the channels of every DFC there
  removed, timed interleaved with the unpruned model (CPU, batch 64, fixed threads, median), so the
  time a FLOP saves is compared across places in one run.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict

import torch

from pruning_lib.pruning.channel_cost import dfc_costs, gamma_summary, order_profile
from pruning_lib.course.checkpoints import load_checkpoint
from pruning_lib.graph import discover
from pruning_lib.scoring import get_criterion
from pruning_lib.course.data import default_data_dir
from pruning_lib.measure import compare_latency, count_flops, speedups
from pruning_lib.surgery import prune

CRITERIA = ("dfpc", "dfpc_mean", "l1")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56", help="checkpoint under data/checkpoints (e.g. paper/resnet20)")
    p.add_argument("--fraction", type=float, default=0.25, help="share of each DFC's channels removed per place")
    p.add_argument("--head", type=float, default=0.1, help="share of the removal order summarised")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, meta = load_checkpoint(default_data_dir() / "checkpoints" / f"{a.model}.pt")
    graph = discover(model, (1, 3, 32, 32))
    costs = dfc_costs(model, graph)
    by_index = {d.index: d for d in graph.dfcs}
    profiles = {c: asdict(order_profile(get_criterion(c)(model, graph), graph, costs, a.head)) for c in CRITERIA}

    places = sorted({c.where for c in costs})
    models = {"unpruned": model}
    saved = {}
    for place in places:
        group = [c for c in costs if c.where == place]
        plan = {by_index[c.index]: list(range(max(1, round(a.fraction * c.channels)))) for c in group}
        models[place] = prune(model, graph, plan)
        saved[place] = {"dfcs": len(group), "channels_removed": sum(len(v) for v in plan.values()),
                        "flops_saved": count_flops(model, graph.input_shape) - count_flops(models[place], graph.input_shape)}
    lat = compare_latency(models, (a.batch, 3, 32, 32), repeats=a.repeats, threads=a.threads)
    sp = speedups(lat, "unpruned")
    base_ms = lat["unpruned"].median_ms
    for place in places:
        ms_saved = base_ms - lat[place].median_ms
        saved[place].update(latency_ms=lat[place].median_ms, speedup=round(sp[place], 4),
                            ms_saved=round(ms_saved, 3),
                            ms_saved_per_gflop=round(ms_saved / (saved[place]["flops_saved"] * a.batch / 1e9), 3))
    result = {"model": a.model, "recipe": meta.get("recipe", {}).get("name", "course"),
              "test_accuracy": meta.get("test_accuracy"), "flops": count_flops(model, graph.input_shape),
              "bn_gamma": asdict(gamma_summary(model)),
              "costs": [dict(asdict(c), where=c.where) for c in costs], "order": profiles,
              "removal_by_place": saved, "unpruned_latency_ms": base_ms, "settings": vars(a),
              "latency_protocol": f"CPU, batch {a.batch}, {a.threads} threads, 3 warm-up, median of "
                                  f"{a.repeats}, interleaved with the unpruned model",
              "hardware": f"{platform.processor() or platform.machine()}", "wall_time_s": round(time.perf_counter() - t0, 1)}
    out = a.out or default_data_dir() / "results" / f"coupled_ablation_{a.model.replace('/', '_')}.json"
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    for c, prof in profiles.items():
        print(f"{c:10s} first coupled channel at {prof['first_coupled']} of {prof['length']}; first "
              f"{prof['head']}: {prof['coupled_in_head']} coupled, {prof['head_by_place']}")
    for place, s in saved.items():
        print(f"{place:10s} {s['channels_removed']:5d} ch  {s['flops_saved'] / 1e6:8.1f} MFLOP  "
              f"speedup {s['speedup']:.3f}  {s['ms_saved_per_gflop']:.3f} ms per GFLOP saved")
    print("wrote", out)
    return result


if __name__ == "__main__":
    main()
