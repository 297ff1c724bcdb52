"""``groupcalc similarity A B [--measure NAME] [--group ACT] [--side post|pre] [--estimator unbiased|biased]
[--layout channels_first|channels_last] [--form similarity|angular|euclidean] [--json]``.

Compares two saved feature arrays (``.npy`` or ``.pt``; same samples in the same order).
Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import warnings
from pathlib import Path

__all__ = ["main"]

GROUP_MEASURES = ("g_cka", "g_procrustes", "laplace_cka")
MEASURES = GROUP_MEASURES + ("linear_cka", "rbf_cka", "orthogonal_procrustes", "subspace_match")
CKA_MEASURES = ("g_cka", "laplace_cka", "linear_cka", "rbf_cka")
PROCRUSTES_MEASURES = ("g_procrustes", "orthogonal_procrustes")


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise _BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="groupcalc similarity", description="Similarity of two feature arrays up to an intertwiner group.")
    p.add_argument("a", help="features of the first network (.npy or .pt), shape (N, C) or (N, C, H, W)")
    p.add_argument("b", help="features of the second network, same N")
    p.add_argument("--measure", default="all",
                   help=f"one of {', '.join(MEASURES)}, or 'all' (default)")
    p.add_argument("--group", default="relu", help="activation name or formula giving the group (default relu)")
    p.add_argument("--side", default="post", choices=["post", "pre"],
                   help="features taken after (post, default) or before (pre) the activation")
    p.add_argument("--estimator", default="unbiased", choices=["unbiased", "biased"],
                   help="HSIC estimator of the CKA measures (default unbiased)")
    p.add_argument("--layout", default=None,
                   choices=["channels_first", "channels_last", "NC", "NCHW", "NCL", "NCT", "NHWC", "NTC", "NLC", "NWC"],
                   help="where the channels are (default: axis 1; channels_last/NTC for (N, T, C) tokens)")
    p.add_argument("--form", default="similarity", choices=["similarity", "angular", "euclidean"],
                   help="Procrustes measures as a similarity (default) or as a distance (angular, euclidean)")
    p.add_argument("--key", default=None, help="entry to read when a .pt file holds a dict of tensors")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _load(path: str, key):
    import numpy as np
    import torch

    f = Path(path)
    if not f.is_file():
        raise _BadInput(f"no such file: {path}")
    suffix = f.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(f, allow_pickle=False)
        if suffix in (".pt", ".pth"):
            obj = torch.load(f, map_location="cpu", weights_only=True)
        else:
            raise _BadInput(f"{path}: expected a .npy or .pt file, not {suffix or 'no suffix'!r}")
    except _BadInput:
        raise
    except Exception as exc:  # unreadable or unsafe file contents
        raise _BadInput(f"{path}: cannot read features ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if isinstance(obj, dict):
        if key is None:
            keys = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
            if len(keys) != 1:
                raise _BadInput(f"{path} holds a dict with tensors {keys}; choose one with --key")
            key = keys[0]
        if key not in obj:
            raise _BadInput(f"{path} has no entry {key!r}; it has {sorted(map(str, obj))}")
        obj = obj[key]
    if not isinstance(obj, torch.Tensor):
        raise _BadInput(f"{path} holds a {type(obj).__name__}, not a tensor")
    return obj


def _measure_all(m, names, A, B, inv, args, results) -> None:
    for name in names:
        fn = getattr(m, name)
        kw = {"layout": args.layout}
        if name in CKA_MEASURES:
            kw["estimator"] = args.estimator
        if name in PROCRUSTES_MEASURES:
            kw["form"] = args.form
        results[name] = fn(A, B, inv, **kw) if name in GROUP_MEASURES else fn(A, B, **kw)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        if args.measure != "all" and args.measure not in MEASURES:
            close = difflib.get_close_matches(args.measure, MEASURES, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise _BadInput(f"unknown measure {args.measure!r}{hint}; choose from {', '.join(MEASURES)} or all")
        from groupcalc import GroupCalcError

        from .. import similarity as m
        from ._invariance import resolve_group

        A, B = _load(args.a, args.key), _load(args.b, args.key)
        names = MEASURES if args.measure == "all" else (args.measure,)
        try:
            inv = resolve_group(args.group, args.side) if any(n in GROUP_MEASURES for n in names) else None
            results = {}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", m.SimilarityWarning)
                _measure_all(m, names, A, B, inv, args, results)
        except (ValueError, TypeError, GroupCalcError) as exc:
            raise _BadInput(str(exc).splitlines()[0]) from None  # the error alone: one line
        # Each distinct warning once, on one line (the same layout warning comes from every measure).
        notes = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
        for note in notes:
            print(f"groupcalc similarity: warning: {note}", file=sys.stderr)
    except _BadInput as exc:
        print(f"groupcalc similarity: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - an internal failure, reported in one line
        print(f"groupcalc similarity: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    shapes = {"a": list(A.shape), "b": list(B.shape)}
    if args.json:
        out = {"a": args.a, "b": args.b, "shapes": shapes, "group": args.group, "side": args.side,
               "estimator": args.estimator, "layout": args.layout or "channels_first", "form": args.form,
               "invariance": inv.describe() if inv else None, "measures": results, "warnings": notes}
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.a} {tuple(A.shape)} vs {args.b} {tuple(B.shape)}")
        if inv is not None:
            print(f"group {args.group} ({args.side}-activation features): {inv.describe()}")
        print(f"CKA estimator {args.estimator}; Procrustes as {args.form}"
              + (" (a distance: 0 = identical)" if args.form != "similarity" else ""))
        width = max(len(n) for n in results)
        for name, v in results.items():
            print(f"  {name:<{width}}  {v:.6f}")
    return 0
