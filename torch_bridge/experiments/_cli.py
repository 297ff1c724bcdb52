"""``groupcalc experiment {sanity,stitch,similarity} ...``: run one of the paper's experiments.

Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise _BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="groupcalc experiment", description=(
        "Run the paper's experiments on real data: 'sanity' (rotation penalties, section 3.3), "
        "'stitch' (stitching penalties, section 4) or 'similarity' (layerwise similarity, section 5). "
        "Writes DIR/results.json, DIR/results.csv and PNG figures."))
    p.add_argument("experiment", choices=("sanity", "stitch", "similarity"))
    p.add_argument("--preset", choices=("smoke", "cpu", "paper"), default="smoke",
                   help="smoke: seconds on CPU; cpu: reduced CIFAR-10 run (under an hour on 2 cores); "
                        "paper: appendix D hyperparameters (GPU)")
    p.add_argument("--dataset", choices=("digits", "cifar10"), help="default: digits (smoke), cifar10 (cpu, paper)")
    p.add_argument("--data-dir", help="CIFAR-10: cifar-10-batches-py folder or .tar.gz, or an ImageFolder tree/tarball")
    p.add_argument("--cache-dir", help="where decoded data and the model zoo live (default ~/.cache/groupcalc)")
    p.add_argument("--arch", choices=("myrtle", "resnet20", "resnet18", "mlp"))
    p.add_argument("--activation", help="catalogue activation name (default relu)")
    p.add_argument("--width", type=int, help="base channel count (hidden size for mlp)")
    p.add_argument("--epochs", type=int, help="training epochs of the zoo models")
    p.add_argument("--models", type=int, help="models in the zoo (different seeds)")
    p.add_argument("--pairs", type=int, help="pairs of models (stitch, similarity)")
    p.add_argument("--repeats", type=int, help="repeats of the sanity experiment")
    p.add_argument("--seed", type=int, help="first seed (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, help="torch CPU threads (smoke and cpu presets: 1)")
    p.add_argument("--out", default=None, help="output folder (default experiment-<name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print results.json to stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        from ._config import make_config

        cfg = make_config(
            args.experiment, args.preset, dataset=args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir,
            arch=args.arch, activation=args.activation, width=args.width, epochs=args.epochs, models=args.models,
            pairs=args.pairs, repeats=args.repeats, seed=args.seed, device=args.device, threads=args.threads,
            out=args.out or f"experiment-{args.experiment}", progress=False if args.no_progress else None)
        _validate(cfg)
    except _BadInput as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    try:
        from ._run import run_experiment

        results = run_experiment(cfg)
    except _user_errors() as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("groupcalc experiment: interrupted (finished models are kept in the zoo; rerun to resume)",
              file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI turns every failure into one line + exit 1
        print(f"groupcalc experiment: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print((Path(cfg.out) / "results.json").read_text())
    else:
        _print_summary(results, cfg)
    return 0


def _user_errors():
    from ._data import DataError

    errs = [DataError]
    try:
        import activations

        errs.append(activations.FormulaError)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    try:
        import groupcalc

        errs.append(groupcalc.GroupCalcError)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(errs)


def _validate(cfg) -> None:
    import activations

    try:
        activations.get(cfg.activation)
    except KeyError:
        import difflib

        close = difflib.get_close_matches(cfg.activation, activations.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"Argument '--activation' names no catalogue activation: {cfg.activation!r}{hint}.") from None
    if cfg.dataset == "cifar10" and not cfg.data_dir:
        raise ValueError("Argument '--data-dir' is required with --dataset cifar10.")


def _print_summary(results: dict, cfg) -> None:
    acc = results["accuracy"]
    print(f"{results['experiment']}: {cfg.arch} width {cfg.width} {cfg.activation} on {cfg.dataset} "
          f"({acc['n']} models, test accuracy {100 * acc['test_acc_mean']:.1f} ± {100 * acc['test_acc_ci95']:.1f}%)")
    key = {"sanity": "transform", "stitch": "method", "similarity": "measure"}[results["experiment"]]
    scale = 1.0 if results["experiment"] == "similarity" else 100.0
    unit = "" if scale == 1.0 else " (accuracy points)"
    print(f"{'layer':<14}{key:<24}{'mean':>10}{'± 95% CI':>12}{'n':>4}{unit}")
    for r in results["summary"]:
        print(f"{r['layer']:<14}{r[key]:<24}{scale * r['mean']:>10.4g}{scale * r['ci95']:>12.3g}{r['n']:>4}")
    print(f"results: {cfg.out}/results.json, results.csv; figures: {', '.join(results.get('figures', []))}")
