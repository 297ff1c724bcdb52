"""`groupcalc table`: Table 1 of the paper regenerated for the whole catalogue (default
parameters), every row derived by the engine."""

from __future__ import annotations

import json

import sympy

import activations

from ._derive import DEFAULT_TIMEOUT, derive


def rows(timeout: float = DEFAULT_TIMEOUT) -> list:
    """One dict per catalogue activation at its default parameters."""
    out = []
    for act in activations.catalogue():
        d = derive(act.name, act.defaults or None, timeout=timeout)
        c = d.cases[0]
        out.append({
            "status": c.status,
            "activation": act.name,
            "parameters": {k: str(v) for k, v in act.defaults.items()},
            "formula": str(act.formula(**act.defaults)),
            "class": c.cls,
            "group": c.group,
            "S": c.scalings.describe() if c.scalings else None,
            "phi": None if c.scalings is None else str(c.scalings.phi),
            "phi_n": c.phi_n,
            "sigma_I_singular_n": c.to_json()["sigma_I_singular_n"],
        })
    return out


def table(fmt: str = "markdown", timeout: float = DEFAULT_TIMEOUT) -> str:
    data = rows(timeout)
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "latex":
        lines = [r"\begin{tabular}{lllll}", r"$\sigma$ & $G_{\sigma_n}$ & $\phi_\sigma$ & $\sigma(I_n)$ singular & status \\ \hline"]
        for r in data:
            group = (r["group"] or "").replace("{", r"\{").replace("}", r"\}")
            phi = sympy.latex(activations.parse_formula(r["phi"], variable="a")) if r["phi"] else "---"
            lines.append(f"{r['activation'].replace('_', r'_')} & {group} & ${phi}$ & {r['sigma_I_singular_n'] or 'none'} & {r['status']} \\\\")
        lines.append(r"\end{tabular}")
        return "\n".join(lines)
    lines = ["| activation | G_sigma_n | S = G_sigma_1 | phi(a) | sigma(I_n) singular for | status |", "|---|---|---|---|---|---|"]
    for r in data:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        name = r["activation"] + (f" ({params})" if params else "")
        lines.append(f"| {name} | {r['group']} | {r['S'] or '-'} | {r['phi'] or '-'} | {r['sigma_I_singular_n'] or 'none'} | {r['status']} |")
    return "\n".join(lines)
