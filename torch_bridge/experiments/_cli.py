"""``groupcalc experiment {sanity,stitch,similarity,leaky_sweep,l1_sparsity,alpha_cv,transformer_stitch} ...``:
run one of the paper's experiments;
``groupcalc experiment status DIR``: how many of a run's jobs are done, running, failed, pending.

Exit codes: 0 success; 2 bad input, found before any compute (one line on stderr: a bad or
ignored flag, an unwritable ``--out`` or cache, ``--device cuda`` without a GPU, more pairs than
exist...); 1 failure (an internal error, jobs that failed or were interrupted: the finished
ones are kept and rerunning the command resumes).
"""

from __future__ import annotations

import argparse
import json
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
        "'stitch' (stitching penalties, section 4; methods full, rankR, group, softsort), 'similarity' (layerwise "
        "similarity, section 5), 'leaky_sweep' (LeakyReLU slopes, table 3 / fig. 8), 'l1_sparsity' (D.6, fig. 15) "
        "or 'alpha_cv' (D.5, figs. 13-14). "
        "Writes DIR/results.json, DIR/results.csv and PNG figures; accuracies and penalties are in "
        "accuracy points. 'groupcalc experiment status DIR' counts a run's jobs by state."),
        epilog="exit codes: 0 success; 2 bad input, found before any compute (one line on stderr); "
               "1 failure (internal error, or failed/interrupted jobs: finished jobs are kept, rerun to resume)")
    from ._registry import names

    p.add_argument("experiment", choices=names())
    p.add_argument("--preset", choices=("smoke", "cpu", "paper"), default="smoke",
                   help="smoke: seconds on CPU; cpu: reduced CIFAR-10 run (under an hour on 2 cores); "
                        "paper: appendix D hyperparameters (GPU)")
    p.add_argument("--dataset", choices=("digits", "cifar10"), help="default: digits (smoke), cifar10 (cpu, paper)")
    p.add_argument("--data-dir", help="CIFAR-10: cifar-10-batches-py folder or .tar.gz, or an ImageFolder "
                                      "tree/tarball (implies --dataset cifar10; refused with --dataset digits)")
    p.add_argument("--cache-dir", help="where decoded data and the model zoo live (default ~/.cache/groupcalc)")
    p.add_argument("--arch", choices=("myrtle", "resnet20", "resnet18", "mlp", "vit"))
    p.add_argument("--activation", help="catalogue activation name (default relu)")
    p.add_argument("--width", type=int, help="base channel count (hidden size for mlp)")
    p.add_argument("--epochs", type=int, help="training epochs of the zoo models")
    p.add_argument("--models", type=int, help="models in the zoo (different seeds)")
    p.add_argument("--pairs", type=int, help="pairs of models (stitch, similarity)")
    p.add_argument("--repeats", type=int, help="repeats of the sanity experiment")
    p.add_argument("--finetune-epochs", type=int, help="sanity: epochs of each fine-tuning")
    p.add_argument("--finetune-images", type=int, help="sanity: training images of each fine-tuning (default: "
                   "the preset's; cpu 5,000)")
    p.add_argument("--seed", type=int, help="first seed (default 0)")
    p.add_argument("--layers", help="comma-separated activation site names to use (default: every site)")
    p.add_argument("--slopes", help="leaky_sweep: comma-separated LeakyReLU negative slopes")
    p.add_argument("--methods", help="stitch, leaky_sweep: comma-separated stitching methods "
                                     "(full, rankR, group, softsort)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N; a missing GPU is refused (exit 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (smoke and cpu presets: 1)")
    p.add_argument("--out", default=None, help="output folder (default experiment-<name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print results.json to stdout")
    g = p.add_argument_group("jobs", "where the jobs run (finished jobs are kept in OUT/jobs; rerun to resume)")
    g.add_argument("--executor", choices=("inline", "local", "slurm"), default="inline",
                   help="inline: this process (default); local: submitit worker processes on this machine; "
                        "slurm: submitit jobs on a SLURM cluster")
    g.add_argument("--workers", type=int, default=1, help="worker processes or SLURM jobs (local, slurm)")
    g.add_argument("--slurm-partition", help="SLURM partition")
    g.add_argument("--slurm-gpus-per-node", type=int, help="GPUs per SLURM job")
    g.add_argument("--slurm-time", type=int, help="time limit per worker in minutes (local, slurm; default 1440)")
    return p


def _status_main(argv: list[str]) -> int:
    p = _Parser(prog="groupcalc experiment status", description="Jobs of an experiment output folder by state.")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    try:
        args = p.parse_args(argv)
        from ._jobs import STATES, status

        st = status(args.dir)
    except (_BadInput, ValueError) as e:
        print(f"groupcalc experiment status: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"{st['experiment']}: {st['jobs']} jobs" + ("; results.json merged" if st["merged"] else ""))
    for s in STATES:
        kinds = ", ".join(f"{k} {v[s]}" for k, v in st["by_kind"].items() if v[s])
        print(f"{s:<8}{st[s]:>6}" + (f"  ({kinds})" if kinds else ""))
    for f in st["failed_jobs"][:5]:
        print(f"  failed: {f['job']}: {f['error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        return _status_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        from ._config import make_config
        from ._run import ExecutorConfig, preflight

        for flag, experiments in _ONLY_FOR.items():  # a flag the experiment would ignore is refused
            if getattr(args, flag[2:].replace("-", "_")) is not None and args.experiment not in experiments:
                raise ValueError(f"Argument '{flag}' applies to the {' and '.join(experiments)} experiment"
                                 f"{'s' if len(experiments) > 1 else ''} only, not {args.experiment!r}.")
        for flag, value in (("--finetune-epochs", args.finetune_epochs), ("--finetune-images", args.finetune_images)):
            if value is not None and value < 1:
                raise ValueError(f"Argument '{flag}' must be a positive integer, not {value}.")

        cfg = make_config(
            args.experiment, args.preset, dataset=args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir,
            arch=args.arch, activation=args.activation, width=args.width, epochs=args.epochs, models=args.models,
            pairs=args.pairs, repeats=args.repeats, finetune_epochs=args.finetune_epochs,
            finetune_n_train=args.finetune_images, seed=args.seed, device=args.device, threads=args.threads,
            out=args.out or f"experiment-{args.experiment}", progress=False if args.no_progress else None,
            layers=_names(args.layers, "--layers"), slopes=_numbers(args.slopes, "--slopes"),
            methods=_names(args.methods, "--methods"))
        if args.slurm_time is not None and args.executor == "inline":
            raise ValueError("Argument '--slurm-time' needs --executor local or slurm (inline has no time limit).")
        ex = ExecutorConfig(args.executor, args.workers, args.slurm_partition, args.slurm_gpus_per_node,
                            24 * 60 if args.slurm_time is None else args.slurm_time)
        _validate(cfg)
        preflight(cfg, ex)
    except _BadInput as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    try:
        from ._run import JobsUnfinished, run_experiment

        results = run_experiment(cfg, executor=ex)
    except _user_errors() as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 2
    except JobsUnfinished as e:
        print(f"groupcalc experiment: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"groupcalc experiment: interrupted (finished jobs are kept in {cfg.out}/jobs and the zoo; "
              f"rerun the same command to resume)", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI turns every failure into one line + exit 1
        print(f"groupcalc experiment: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for w in results.get("warnings", []):
        print(f"groupcalc experiment: warning: {w}", file=sys.stderr)
    if args.json:
        print((Path(cfg.out) / "results.json").read_text())
    else:
        _print_summary(results, cfg)
    return 0


#: flags that only some experiments read (the others refuse them instead of ignoring them)
_ONLY_FOR = {"--methods": ("stitch", "leaky_sweep"), "--slopes": ("leaky_sweep",),
             "--finetune-epochs": ("sanity",), "--finetune-images": ("sanity",)}


def _names(text, flag):
    if text is None:
        return None
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise ValueError(f"Argument '{flag}' must list at least one name, not {text!r}.")
    return names


def _numbers(text, flag):
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"Argument '{flag}' must be comma-separated numbers, not {text!r}.") from None


def _user_errors():
    from ._data import DataError
    from ._setup import UnknownLayer

    errs = [DataError, UnknownLayer]
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

    from ._activation import parse_activation

    name, params = parse_activation(cfg.activation)
    try:
        activations.get(name).bind(**params)
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, activations.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"Argument '--activation' names no catalogue activation: {cfg.activation!r}{hint}.") from None
    if cfg.dataset == "cifar10" and not cfg.data_dir:
        raise ValueError("Argument '--data-dir' is required with --dataset cifar10.")


def _print_summary(results: dict, cfg) -> None:
    from ._registry import get

    kind = get(results["experiment"])
    acc = results["accuracy"]
    ci = "" if acc["test_acc_ci95"] is None else f" ± {acc['test_acc_ci95']:.1f}"
    print(f"{results['experiment']}: {cfg.arch} width {cfg.width} {cfg.activation} on {cfg.dataset} "
          f"({acc['n']} models, test accuracy {acc['test_acc_mean']:.1f}{ci} accuracy points)")
    key = kind.summary_key
    inside = {s["layer"] for s in results.get("sites", []) if s.get("inside_residual")}
    names = {r["layer"]: r["layer"] + ("*" if r["layer"] in inside else "") for r in results["summary"]}
    lw = max([14] + [len(n) + 2 for n in names.values()])
    kw = max([24] + [len(str(r[key])) + 2 for r in results["summary"]])
    print(f"{'layer':<{lw}}{key:<{kw}}{'mean':>10}{'± 95% CI':>12}{'n':>4}  ({kind.value} in {kind.unit}; "
          f"no interval for n = 1" + ("; * inside a residual block" if inside else "") + ")")
    for r in results["summary"]:
        half = "-" if r["ci95"] is None else f"{r['ci95']:.3g}"
        print(f"{names[r['layer']]:<{lw}}{str(r[key]):<{kw}}{r['mean']:>10.4g}{half:>12}{r['n']:>4}")
    print(f"results: {cfg.out}/results.json, results.csv; figures: {', '.join(results.get('figures', []))}")
