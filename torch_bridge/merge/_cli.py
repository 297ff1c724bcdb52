"""``groupcalc barrier A.pt B.pt --model ...`` and ``groupcalc merge A.pt B.pt ... --model ... --out M.pt``.

Checkpoints are state dicts saved with ``torch.save`` (or dicts holding one under ``"model"``
or ``"state_dict"``, as the experiment zoo writes them); they are read with
``torch.load(..., weights_only=True)``, which never unpickles code. ``--model`` is a reference
model of :mod:`torch_bridge.models` (``mlp``, ``myrtle``, ``resnet20``, ``resnet18``) or an
importable constructor ``MODULE:FACTORY`` (found on the current directory and PYTHONPATH),
called with ``--model-kwargs`` (a JSON object). The data options are those of
``groupcalc experiment`` (:func:`torch_bridge.experiments.load_dataset`).

Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from pathlib import Path

__all__ = ["barrier_main", "merge_main"]

REFERENCE_MODELS = ("mlp", "myrtle", "resnet20", "resnet18")


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise _BadInput(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="NAME|MODULE:FACTORY",
                   help=f"a reference model ({', '.join(REFERENCE_MODELS)}) or an importable constructor "
                        "such as mypkg.models:make_net")
    p.add_argument("--model-kwargs", default="{}", metavar="JSON",
                   help="keyword arguments of the constructor, a JSON object (e.g. '{\"sizes\": [64, 32, 10]}'); "
                        "reference CNNs get in_channels from the dataset unless given")
    p.add_argument("--align", choices=("none", "weights", "activations"), default="none",
                   help="align the models modulo their full symmetry group first (default none)")
    # the data options of `groupcalc experiment`
    p.add_argument("--dataset", choices=("digits", "cifar10"), default=None,
                   help="default: digits (embedded), or cifar10 when --data-dir is given")
    p.add_argument("--data-dir", help="CIFAR-10: cifar-10-batches-py folder or .tar.gz, or an ImageFolder "
                                      "tree/tarball (implies --dataset cifar10; refused with --dataset digits)")
    p.add_argument("--cache-dir", help="where decoded data are cached (default ~/.cache/groupcalc)")
    p.add_argument("--samples", type=int, default=None, help="evaluate on the first N test images (default: all)")
    p.add_argument("--stat-samples", type=int, default=1000,
                   help="training images for statistics: REPAIR, batch-norm re-estimation, activation matching "
                        "(default 1000)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _barrier_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="groupcalc barrier", description=(
        "Loss and accuracy along the linear path between two checkpoints, and the barrier: the largest "
        "excess of the loss over the line between the endpoints' losses (Ainsworth et al. 2023)."))
    p.add_argument("checkpoints", nargs=2, metavar="CHECKPOINT", help="two state dicts (.pt)")
    _common(p)
    p.add_argument("--repair", action="store_true", help="REPAIR the interior points (Jordan et al. 2022)")
    p.add_argument("--reestimate", action="store_true",
                   help="re-estimate batch-norm statistics at the interior points (instead of interpolating them)")
    p.add_argument("--alphas", type=int, default=11, help="points on [0, 1], endpoints included (default 11)")
    p.add_argument("--metric", choices=("loss", "accuracy"), default="loss", help="what 'barrier' measures")
    p.add_argument("--plot", metavar="FILE.png", help="write the loss and accuracy curves to a PNG")
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="groupcalc merge", description=(
        "Merge checkpoints into one: align every model to the first, average, repeat (MergeMany)."))
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="two or more state dicts (.pt)")
    _common(p)
    p.add_argument("--out", required=True, metavar="MERGED.pt", help="where the merged state dict is written")
    p.add_argument("--iterations", type=int, default=3, help="rounds of align-and-average (default 3)")
    p.add_argument("--reestimate", action="store_true", help="re-estimate batch-norm statistics of the merged model")
    p.set_defaults(align="weights")
    return p


# Loading ------------------------------------------------------------------------------------

def _factory(spec: str):
    if ":" not in spec:
        if spec in REFERENCE_MODELS:
            from .. import models

            return getattr(models, spec), True
        close = difflib.get_close_matches(spec, REFERENCE_MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise _BadInput(f"argument --model: {spec!r} is neither a reference model ({', '.join(REFERENCE_MODELS)}) "
                        f"nor MODULE:FACTORY{hint}")
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise _BadInput(f"argument --model: expected MODULE:FACTORY, not {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise _BadInput(f"argument --model: cannot import module {mod_name!r} ({e})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise _BadInput(f"argument --model: module {mod_name!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _BadInput(f"argument --model: {spec!r} is not callable")
    return obj, False


def _build(args, data):
    import torch

    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise _BadInput(f"argument --model-kwargs: not JSON ({e.msg})") from None
    if not isinstance(kwargs, dict):
        raise _BadInput("argument --model-kwargs: must be a JSON object")
    make, reference = _factory(args.model)
    if reference and args.model != "mlp":
        kwargs.setdefault("in_channels", data.in_channels)
        kwargs.setdefault("num_classes", data.num_classes)

    def build():
        try:
            m = make(**kwargs)
        except (TypeError, ValueError) as e:
            raise _BadInput(f"argument --model: {args.model}(**{kwargs}) failed: {e}") from None
        if not isinstance(m, torch.nn.Module):
            raise _BadInput(f"argument --model: {args.model} returned a {type(m).__name__}, not an nn.Module")
        return m

    return build


def _state_dict(path: str):
    import torch

    f = Path(path)
    if not f.is_file():
        raise _BadInput(f"no such checkpoint: {path}")
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _BadInput(f"{path}: not a weights-only torch checkpoint ({first[:200]})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _BadInput(f"{path}: expected a state dict (names -> tensors), not {type(obj).__name__}")
    return obj


def _load(build, path: str, device):
    model = build()
    sd = _state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
        raise _BadInput(f"{path}: the state dict does not fit --model {model.__class__.__name__} ({'; '.join(parts)})")
    for k, v in own.items():
        if sd[k].shape != v.shape:
            raise _BadInput(f"{path}: tensor {k!r} has shape {tuple(sd[k].shape)}, the model expects {tuple(v.shape)}")
    model.load_state_dict(sd)
    return model.to(device).eval()


def _check_inputs(model, batches, path):
    import torch

    x = batches[0][0]
    try:
        with torch.no_grad():
            model(x[:2])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise _BadInput(f"{path}: the model does not accept the dataset's inputs of shape {tuple(x.shape)} "
                        f"({first})") from None


def _positive(name, v, allow_none=False):
    if v is None and allow_none:
        return
    if v is None or v < 1:
        raise _BadInput(f"argument --{name}: must be a positive integer, not {v}")


def _setup(args):
    """(dataset, device, eval batches, statistics batches, model builder)."""
    import torch

    from ..experiments._data import DataError, Normalizer, batches, load_dataset
    from ..experiments._train import resolve_device

    _positive("batch-size", args.batch_size)
    _positive("samples", args.samples, allow_none=True)
    _positive("stat-samples", args.stat_samples)
    _positive("threads", args.threads, allow_none=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir and args.dataset == "digits":
        raise _BadInput("argument --data-dir: only for --dataset cifar10 (digits are embedded)")
    if args.dataset is None:
        args.dataset = "cifar10" if args.data_dir else "digits"
    if args.dataset == "cifar10" and not args.data_dir:
        raise _BadInput("argument --data-dir is required with --dataset cifar10")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise _BadInput(f"argument --device: {e}") from None
    try:
        data = load_dataset(args.dataset, args.data_dir, args.cache_dir)
    except DataError as e:
        raise _BadInput(str(e)) from None
    norm = Normalizer(data, device)
    n_eval = len(data.y_test) if args.samples is None else min(args.samples, len(data.y_test))
    n_stat = min(args.stat_samples, len(data.y_train))
    evals = list(batches(data.x_test[:n_eval], data.y_test[:n_eval], args.batch_size, norm))
    stats = list(batches(data.x_train[:n_stat], data.y_train[:n_stat], args.batch_size, norm))
    return data, device, evals, stats, _build(args, data)


# Commands -----------------------------------------------------------------------------------

def _run(prog: str, body, argv) -> int:
    import warnings

    def show(message, category, *_args, **_kw):  # warnings as one line each, not file:line + source
        print(f"{prog}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # shown (once per place), never raised
            warnings.showwarning = show
            return body(argv)
    except _BadInput as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 1
    except _user_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI turns every failure into one line + exit 1
        print(f"{prog}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _user_errors():
    from ..symmetry import SymmetrySpecError

    return (SymmetrySpecError, ValueError)


def barrier_main(argv: list[str] | None = None) -> int:
    """``groupcalc barrier``."""
    return _run("groupcalc barrier", _barrier, list(sys.argv[1:] if argv is None else argv))


def merge_main(argv: list[str] | None = None) -> int:
    """``groupcalc merge``."""
    return _run("groupcalc merge", _merge, list(sys.argv[1:] if argv is None else argv))


def _barrier(argv) -> int:
    args = _barrier_parser().parse_args(argv)
    if args.alphas < 2:
        raise _BadInput(f"argument --alphas: at least 2 points, not {args.alphas}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise _BadInput(f"argument --plot: expected a .png file name, not {args.plot!r}")
    data, device, evals, stats, build = _setup(args)
    a = _load(build, args.checkpoints[0], device)
    b = _load(build, args.checkpoints[1], device)
    _check_inputs(a, evals, args.checkpoints[0])
    from . import barrier

    r = barrier(a, b, evals, args.alphas, metric=args.metric, align=None if args.align == "none" else args.align,
                repair=args.repair, buffers="reestimate" if args.reestimate else "interpolate", stats_data=stats)
    if args.plot:
        _plot(r, args.plot, args.checkpoints)
    if args.json:
        out = r.to_json()
        out.update(checkpoints=list(args.checkpoints), dataset=args.dataset, samples=sum(len(y) for _, y in evals))
        print(json.dumps(out))
        return 0
    align = "no alignment" if r.align is None else f"aligned by {r.align}"
    print(f"{args.checkpoints[0]} -> {args.checkpoints[1]} on {args.dataset} ({align}"
          f"{', REPAIR' if r.repair else ''}; {sum(len(y) for _, y in evals)} test images)")
    if r.align is not None:
        print(f"weight distance: {r.distance_before:.4g} -> {r.distance_after:.4g} ({r.align_seconds:.2f} s)")
    if r.feature_distance_before is not None:
        print(f"feature distance: {r.feature_distance_before:.4g} -> {r.feature_distance_after:.4g}")
    print(f"{'alpha':>6}{'loss':>10}{'accuracy':>10}")
    for al, lo, ac in zip(r.alphas, r.loss, r.accuracy):
        print(f"{al:>6.2f}{lo:>10.4f}{100 * ac:>9.2f}%")
    print(f"loss barrier {r.loss_barrier:.4f}; accuracy barrier {100 * r.accuracy_barrier:.2f} points")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _merge(argv) -> int:
    args = _merge_parser().parse_args(argv)
    if len(args.checkpoints) < 2:
        raise _BadInput("at least two checkpoints are needed")
    _positive("iterations", args.iterations)
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise _BadInput(f"argument --out: {args.out!r} is a folder")
    if not out.parent.exists():
        raise _BadInput(f"argument --out: folder {str(out.parent)!r} does not exist")
    data, device, evals, stats, build = _setup(args)
    models = [_load(build, c, device) for c in args.checkpoints]
    _check_inputs(models[0], evals, args.checkpoints[0])
    from . import evaluate, merge_many
    from ..experiments._train import atomic_save

    merged = merge_many(models, stats, args.iterations, align=None if args.align == "none" else args.align,
                        buffers="reestimate" if args.reestimate else "interpolate")
    atomic_save({k: v.detach().cpu() for k, v in merged.state_dict().items()}, out)
    accs = [evaluate(m, evals)[1] for m in models]
    loss, acc = evaluate(merged, evals)
    if args.json:
        print(json.dumps({"out": str(out), "checkpoints": list(args.checkpoints), "align": args.align,
                          "iterations": args.iterations, "accuracy": accs, "merged_accuracy": acc,
                          "merged_loss": loss}))
        return 0
    for c, ac in zip(args.checkpoints, accs):
        print(f"{c}: accuracy {100 * ac:.2f}%")
    print(f"merged ({args.align}, {args.iterations} iterations): accuracy {100 * acc:.2f}%, loss {loss:.4f} -> {out}")
    return 0


def _plot(r, path, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].plot(r.alphas, r.loss, "o-")
    ax[0].set_xlabel("alpha")
    ax[0].set_ylabel("loss")
    ax[1].plot(r.alphas, [100 * a for a in r.accuracy], "o-")
    ax[1].set_xlabel("alpha")
    ax[1].set_ylabel("accuracy (%)")
    title = f"{Path(names[0]).name} -> {Path(names[1]).name}: loss barrier {r.loss_barrier:.3f}"
    fig.suptitle(title + (f" (align {r.align})" if r.align else ""))
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise _BadInput(f"argument --plot: cannot write {path!r} ({e.strerror})") from None
    finally:
        plt.close(fig)
