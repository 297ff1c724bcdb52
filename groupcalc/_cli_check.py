"""``groupcalc check ACTIVATION [--param NAME=VALUE]... [--n N] [--trials T] [--json]``.

A numeric verification report of the engine's group for one activation (a catalogue name
or a formula): the largest residual of sigma(A x) = phi(A) sigma(x) over sampled claimed
elements, the claimed scalings one by one, and an independent numeric search over the
scalings that flags what the engine may have missed or should not claim.

Exit codes: 0 when the check agrees with the engine, 1 when it finds a disagreement or
fails internally, 2 on bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def _param(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--param must look like NAME=VALUE, not {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {name.strip()} must be a number, not {value!r}") from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``check`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "check",
        help="verify the engine's group of an activation numerically",
        description="Check the derived intertwiner group of ACTIVATION (catalogue name or formula) numerically.",
    )
    p.add_argument("activation", metavar="ACTIVATION", help="a catalogue name (e.g. relu) or a formula (e.g. 'x*sigmoid(2*x)')")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="a parameter value (repeatable); catalogue defaults for the rest")
    p.add_argument("--n", type=_positive_int, default=4, help="dimension of the sampled group elements (default 4)")
    p.add_argument("--trials", type=_positive_int, default=20, help="number of sampled elements (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tol", type=float, default=None, help="tolerance on relative residuals (default 1e-6)")
    p.add_argument("--timeout", type=float, default=None,
                   help="engine wall-clock guard in seconds (default: the engine's, 120)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run ``groupcalc check`` for parsed ``args``; returns the exit code."""
    from . import _check
    from ._groups import group
    from ._result import GroupCalcError

    params = dict(args.param)
    tol = _check.DEFAULT_TOL if args.tol is None else args.tol
    if not tol > 0:
        print(f"groupcalc check: error: --tol must be positive, not {args.tol}", file=sys.stderr)
        return 2
    try:
        label, sigma, values = _check.resolve_activation(args.activation, params)
    except (ValueError, KeyError) as err:
        msg = err.args[0] if err.args else str(err)
        print(f"groupcalc check: error: {msg}", file=sys.stderr)
        return 2
    try:
        grp = group(args.activation, timeout=args.timeout, **{k: float(v) for k, v in values.items()})
    except (ValueError, KeyError) as err:
        print(f"groupcalc check: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except GroupCalcError as err:
        print(f"groupcalc check: engine failed: {err}", file=sys.stderr)
        return 1
    try:
        report = _check.check(label, values, n=args.n, trials=args.trials, rng=args.seed, tol=tol, group=grp, sigma=sigma)
    except Exception as err:  # noqa: BLE001 - the CLI reports internal failures in one line
        print(f"groupcalc check: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.describe())
    return 0 if report.passed else 1


def main(argv=None) -> int:
    """Stand-alone entry (``python -m groupcalc._cli_check relu``)."""
    parser = argparse.ArgumentParser(prog="groupcalc")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["check", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
