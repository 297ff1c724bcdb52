"""Timing of the symmetry machinery on the paper's CIFAR ResNet20 and ResNet18 (full width).

Times, per model: spec extraction (trace + shape propagation + analysis), one group action,
canonicalisation, and alignment (weight matching; activation matching) of a planted pair
(``b = act(k, a)``) and of two independent random initialisations (batch-norm parameters
and statistics randomised so they are not the trivial 1/0 of a fresh model).

Run:  nice -n 10 python benchmarks/bench_symmetry.py [--models resnet20 resnet18] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from torch_bridge.models import randomize_batchnorm, resnet18, resnet20
from torch_bridge.symmetry import align, canonicalize, symmetry_spec, verify_equivalence




def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench(name, build, device, batch):
    torch.manual_seed(0)
    a = randomize_batchnorm(build(), 0, mean_scale=0.1).to(device)
    b = randomize_batchnorm(build(), 1, mean_scale=0.1).to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    row = {"model": name, "parameters": sum(p.numel() for p in a.parameters())}
    spec, row["spec_s"] = timed(lambda: symmetry_spec(a, x))
    row["sites"], row["dimension"], row["log10_components"] = len(spec.sites), spec.dimension, round(spec.log10_components, 1)
    k = spec.sample(torch.Generator().manual_seed(5))
    planted, row["act_s"] = timed(lambda: spec.act(k, a))
    row["act_max_output_diff"] = verify_equivalence(a, planted, x)
    (canon, _), row["canonicalize_s"] = timed(lambda: canonicalize(a, spec=spec))
    canon2, _ = canonicalize(planted, spec=spec)
    row["canonical_orbit_max_diff"] = max(float((p - q).abs().max()) for p, q in zip(canon.state_dict().values(), canon2.state_dict().values())
                                          if p.is_floating_point())
    for method in ("weights", "activations"):
        (g, rep), t = timed(lambda: align(a, planted, x, method, spec=spec, return_report=True))
        row[f"align_{method}_planted_s"] = t
        row[f"align_{method}_planted_after"] = rep.distance_after
        row["planted_before"] = rep.distance_before
        (g, rep), t = timed(lambda: align(a, b, x, method, spec=spec, return_report=True))
        row[f"align_{method}_independent_s"] = t
        row[f"align_{method}_independent"] = (rep.distance_before, rep.distance_after, rep.iterations)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet18"], choices=["resnet20", "resnet18"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--batch", type=int, default=64, help="example inputs (activation matching uses them)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    builders = {"resnet20": resnet20, "resnet18": resnet18}
    rows = [bench(m, builders[m], args.device, args.batch) for m in args.models]
    env = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "batch": args.batch}
    if args.json:
        print(json.dumps({"env": env, "rows": rows}, indent=1))
        return 0
    print(f"# {env}")
    for r in rows:
        print(f"\n## {r['model']}: {r['parameters']:,} parameters, {r['sites']} sites, dimension {r['dimension']}, "
              f"components 10^{r['log10_components']}")
        print(f"spec extraction          {r['spec_s']:8.2f} s")
        print(f"act (one element)        {r['act_s']:8.2f} s   max output diff {r['act_max_output_diff']:.2e}")
        print(f"canonicalize             {r['canonicalize_s']:8.2f} s   orbit max weight diff {r['canonical_orbit_max_diff']:.2e}")
        for m in ("weights", "activations"):
            b0, b1, it = r[f"align_{m}_independent"]
            print(f"align {m:<11} planted  {r[f'align_{m}_planted_s']:8.2f} s   distance {r['planted_before']:.1f} -> "
                  f"{r[f'align_{m}_planted_after']:.2e}")
            print(f"align {m:<11} indep.   {r[f'align_{m}_independent_s']:8.2f} s   distance {b0:.1f} -> {b1:.1f} ({it} sweeps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
