"""The `groupcalc` command line: a thin layer over the Python API.

Commands: ``group`` (the main job), ``table``, ``list``, ``check``; commands that need torch
(``similarity``, ``experiment``) are found through the ``groupcalc.commands`` entry points
so that this module never imports torch_bridge. Exit codes: 0 success, 2 bad input,
1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

CORE = ("group", "table", "list", "check")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise _BadInput(f"{self.prog}: {message}")


class _BadInput(Exception):
    pass


def _plugins():
    from importlib.metadata import entry_points

    try:
        return {ep.name: ep for ep in entry_points(group="groupcalc.commands")}
    except Exception:  # noqa: BLE001 - broken metadata must not break the core commands
        return {}


def _parse_params(items):
    out = {}
    for item in items or ():
        if "=" not in item:
            raise _BadInput(f"--param must look like NAME=VALUE, not {item!r}")
        name, value = item.split("=", 1)
        try:
            v = float(value)
        except ValueError:
            raise _BadInput(f"--param {name}: {value!r} is not a number") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise _BadInput(f"--param {name}: {value!r} is not a finite number")
        out[name.strip()] = v
    return out


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    p = _Parser(prog="groupcalc", description="Derive intertwiner groups of activation functions.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    g = sub.add_parser("group", help="derive G_sigma_n and phi_sigma for an activation or a formula")
    g.add_argument("activation", help="a catalogue name (see `groupcalc list`) or a formula in x, e.g. 'x*tanh(x)'")
    g.add_argument("--param", action="append", metavar="NAME=VALUE", help="fix a parameter (repeatable)")
    fmt = g.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object")
    fmt.add_argument("--latex", action="store_true", help="LaTeX")
    g.add_argument("--timeout", type=float, default=None,
                   help="wall-clock guard in seconds (default 120); the answer is limited by --work, not by the clock")
    g.add_argument("--work", type=int, default=None,
                   help="work budget in counted steps (default 20000): the same answer on a busy and an idle machine")
    g.add_argument("--proof", action="store_true", help="print every proof step (default: the first case's)")
    t = sub.add_parser("table", help="Table 1 of the paper, regenerated for the whole catalogue")
    t.add_argument("--format", choices=("markdown", "latex", "json"), default="markdown")
    t.add_argument("--timeout", type=float, default=None, help="wall-clock guard per activation in seconds (default 120)")
    t.add_argument("--json", action="store_true", help="same as --format json")
    lst = sub.add_parser("list", help="the catalogue of named activations")
    lst.add_argument("--json", action="store_true")
    from . import _cli_check

    _cli_check.add_parser(sub)
    if with_plugins:
        for name in sorted(_plugins()):
            sub.add_parser(name, help=f"(torch) run `groupcalc {name} --help`", add_help=False)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] not in CORE and not argv[0].startswith("-"):
            plugins = _plugins()
            if argv[0] in plugins:
                return int(plugins[argv[0]].load()(argv[1:]) or 0)
        args = build_parser(with_plugins=not argv or argv[0] not in CORE).parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        code = {"group": _group, "table": _table, "list": _list, "check": _check}[args.command](args)
        sys.stdout.flush()  # inside the handlers below: a closed pipe is reported here, not at exit
        return code
    except _BadInput as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("groupcalc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`groupcalc list | head`): stop quietly, as other Unix tools do;
        # stdout is pointed at /dev/null so the interpreter's final flush does not fail again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
            pass
        return 141
    except Exception as err:  # noqa: BLE001 - the CLI turns every error into one line
        from ._result import GroupCalcError

        if isinstance(err, (GroupCalcError, ValueError, KeyError)):
            msg = err.args[0] if err.args else str(err)
            print(f"groupcalc: error: {msg}", file=sys.stderr)
            return 2
        print(f"groupcalc: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _check(args) -> int:
    from . import _cli_check

    return _cli_check.run(args)


def _group(args) -> int:
    from ._derive import DEFAULT_TIMEOUT, DEFAULT_WORK, derive
    from ._format import latex, text

    if args.timeout is not None and not (0 < args.timeout <= 3600):
        raise _BadInput("--timeout must be between 0 and 3600 seconds")
    if args.work is not None and not (0 < args.work <= 10**8):
        raise _BadInput("--work must be between 1 and 100000000 steps")
    d = derive(args.activation, _parse_params(args.param) or None,
               timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
               work=DEFAULT_WORK if args.work is None else args.work)
    if args.json:
        print(json.dumps(d.to_json(), indent=2, ensure_ascii=False))
    elif args.latex:
        print(latex(d))
    else:
        print(text(d, proof_all=args.proof))
    return 0


def _table(args) -> int:
    from ._table import table

    from ._derive import DEFAULT_TIMEOUT

    if args.timeout is not None and not (0 < args.timeout <= 3600):
        raise _BadInput("--timeout must be between 0 and 3600 seconds")
    fmt = "json" if args.json else args.format
    print(table(fmt, timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout))
    return 0


def _list(args) -> int:
    import activations

    rows = [{"name": a.name, "formula": str(a.expr), "parameters": {p.name: str(p.default) for p in a.parameters},
             "reference": a.reference} for a in activations.catalogue()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        print(f"{r['name']:<{width}}  {r['formula']}" + (f"   [{params}]" if params else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
