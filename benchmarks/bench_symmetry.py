"""Timing of the symmetry machinery on GPT-2 small's configuration (124M parameters, random
weights), a timm-layout ResNet50 and the paper's CIFAR ResNet20/ResNet18.

Times, per model: spec extraction (torch.export capture + rules + solve), one group action (and
its relative output difference), canonicalisation, and weight-matching alignment of a planted
pair (``b = act(k, a)``). Steps that fail are reported with their error instead of a time.

Run:  nice -n 10 python benchmarks/bench_symmetry.py [--models gpt2 resnet50] [--threads 1] [--json] [--no-align]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from torch_bridge.models import randomize_batchnorm, resnet18, resnet20
from torch_bridge.symmetry import align, canonicalize, symmetry_spec, weight_distance


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _gpt2(device):
    import transformers

    cfg = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval().to(device)
    ids = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1)).to(device)
    return model, (ids,), {"use_cache": False}


def _resnet50(device):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _cnn_models import resnet50

    torch.manual_seed(0)
    model = randomize_batchnorm(resnet50(64), 0, mean_scale=0.1).eval().to(device)
    return model, (torch.randn(2, 3, 64, 64, device=device),), {}


def _paper(build):
    def make(device):
        torch.manual_seed(0)
        model = randomize_batchnorm(build(), 0, mean_scale=0.1).eval().to(device)
        return model, (torch.randn(8, 3, 32, 32, device=device),), {}

    return make


BUILDERS = {"gpt2": _gpt2, "resnet50": _resnet50, "resnet20": _paper(resnet20), "resnet18": _paper(resnet18)}


def _try(row, key, fn):
    try:
        out, t = timed(fn)
        row[f"{key}_s"] = round(t, 3)
        return out
    except Exception as e:  # noqa: BLE001 - a benchmark reports failures and goes on
        row[f"{key}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return None


def bench(name, device, do_align):
    model, args, kwargs = BUILDERS[name](device)
    row = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
    spec = _try(row, "spec", lambda: symmetry_spec(model, args, kwargs))
    if spec is None:
        return row
    row["sites"], row["dimension"], row["log10_components"] = len(spec.sites), spec.dimension, round(spec.log10_components, 1)
    k = spec.sample(torch.Generator().manual_seed(5))
    planted = _try(row, "act", lambda: spec.act(k, model))
    if planted is not None:
        row["act_relative_output_diff"] = spec.verify(model, args, kwargs, g=k)
    _try(row, "canonicalize", lambda: canonicalize(model, spec=spec))
    if do_align and planted is not None:
        res = _try(row, "align_weights_planted", lambda: align(model, planted, args, "weights", spec=spec, return_report=True))
        if res is not None:
            g, rep = res
            row["planted_distance"] = (round(rep.distance_before, 3), rep.distance_after)
            row["aligned_distance_check"] = weight_distance(model, spec.act(g, planted))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["gpt2", "resnet50"], choices=list(BUILDERS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-align", action="store_true", help="skip the alignment step")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [bench(m, args.device, not args.no_align) for m in args.models]
    env = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps({"env": env, "rows": rows}, indent=1, default=str))
        return 0
    print(f"# {env}")
    for r in rows:
        print(f"\n## {r['model']}: {r['parameters']:,} parameters")
        for k, v in r.items():
            if k not in ("model", "parameters"):
                print(f"{k:<28} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
