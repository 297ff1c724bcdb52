"""Text and LaTeX renderings of a :class:`~groupcalc.Derivation`."""

from __future__ import annotations

import textwrap

import sympy

from ._result import Case, Derivation


def _wrap(s, indent="    "):
    return textwrap.fill(s, width=100, initial_indent=indent, subsequent_indent=indent + "  ")


def _sing(case: Case) -> str:
    if case.singular_n is None:
        return "not established"
    if isinstance(case.singular_n, str):
        return f"singular for {case.singular_n.replace('all', 'all n') if case.singular_n == 'all' else case.singular_n}"
    if not case.singular_n:
        return "invertible for every n"
    return f"singular exactly for n in {list(case.singular_n)}"


def text(d: Derivation, proof_all: bool = False) -> str:
    """The human-readable report of ``groupcalc group``."""
    lines = [f"status: {d.status}", f"sigma(x) = {sympy.sstr(d.expr)}   [{d.activation}]"]
    lines += [f"note: {n}" for n in d.notes]
    if d.parameters:
        lines.append(f"parameters: {', '.join(d.parameters)} ({len(d.cases)} case{'s' if len(d.cases) != 1 else ''})")
    for i, c in enumerate(d.cases):
        lines.append("")
        head = f"case {i + 1}: {c.condition}" if d.parameters else "answer"
        lines.append(f"{head}   [{c.status}]")
        lines.append(f"  class       : {c.cls or 'not established'}")
        lines.append(f"  G_sigma_n   : {c.group}")
        if c.scalings is not None:
            lines.append(f"  {'S contains  ' if c.status == 'unknown' else 'S = G_sigma_1'}: {c.scalings.describe()}, "
                         f"phi(a) = {sympy.sstr(c.scalings.phi)}")
        if c.phi_n:
            lines.append(f"  phi_sigma   : {c.phi_n}")
        lines.append(f"  sigma(I_n)  : {_sing(c)}")
        failed = [h for h in c.hypotheses if h[1] is False]
        if c.cls == "nonlinear" and failed:
            lines.append("  Theorem E.14 hypotheses failing: " + "; ".join(f"{n} ({r})" for n, _, r in failed))
        if proof_all or i == 0:
            lines.append("  proof:")
            for j, step in enumerate(c.certificate, 1):
                lines.append(_wrap(f"{j}. {step}"))
    if not proof_all and len(d.cases) > 1:
        lines.append("")
        lines.append("(--proof prints the proof of every case; --json gives everything)")
    return "\n".join(lines)


def latex(d: Derivation) -> str:
    """A LaTeX fragment: one row per case."""
    rows = [r"\begin{tabular}{llll}", r"condition & $G_{\sigma_n}$ & $\phi_\sigma$ & status \\ \hline"]
    for c in d.cases:
        cond = sympy.latex(c.condition) if c.condition is not sympy.true else "---"
        group = c.group.replace("{", r"\{").replace("}", r"\}")
        phi = sympy.latex(c.scalings.phi) if c.scalings is not None else "---"
        rows.append(f"${cond}$ & {group} & $\\phi(a) = {phi}$ & {c.status} \\\\")
    rows.append(r"\end{tabular}")
    return f"% sigma(x) = {sympy.sstr(d.expr)}\n" + "\n".join(rows)
