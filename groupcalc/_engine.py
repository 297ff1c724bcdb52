"""The derivation of S = G_sigma_1 and phi for one formula (parameters handled by the oracle).

The steps, each recorded in the certificate:

1. Normal form: sigma as analytic pieces between break points (:mod:`._pieces`); break points
   where sigma is in fact analytic are removed.
2. Class: constant (sigma' = 0), linear (sigma'' = 0, sigma(0) = 0), affine (sigma'' = 0,
   sigma(0) != 0) or nonlinear.
3. Positive part of S, by the differential criterion:

   * a break point t != 0 is a point where sigma is not analytic; sigma(a x) = b sigma(x)
     with a > 0 maps the finite set of such points onto itself by t -> t / a, so a = 1;
   * otherwise (break points only at 0) positive homogeneity is tested on each side in
     its infinitesimal form x sigma'(x) = lambda sigma(x) (pieces where sigma vanishes
     impose nothing); if it holds, S contains all of (0, oo) with phi(a) = a^lambda;
   * otherwise Taylor matching at 0 on a side where the piece is analytic:
     c_k a^k = b c_k for every k, so two non-zero coefficients c_j, c_k force a^(k-j) = 1;
   * otherwise, when sigma(±e^t) = C e^(lam t) R(e^(i w t)) on each side (R rational), the
     exact root-of-unity argument of :mod:`._logperiodic` (generator and minimality proved);
   * otherwise a numeric scan of log a in (0, 40]; a candidate counts only when an exact
     number for it passes the symbolic identity, and the answer is then only verified
     numerically (unknown when no exact number explains a numeric candidate).
4. Negative part: S ∩ (-oo, 0) is empty or a coset a0 S+, and a0^2 ∈ S+; so it suffices to
   test the parity sigma(-x) = c sigma(x) (c = ±1 necessarily) and, for discrete S+ = g^Z,
   the element -sqrt(g).
5. sigma(I_n) (Lemma E.7 by eigenvalues: sigma(1) + (n-1) sigma(0) once and
   sigma(1) - sigma(0) with multiplicity n - 1).
6. The hypotheses of Theorem E.14, continuity judged by one-sided limits; for a discontinuous
   sigma the discontinuity argument (docs/theory.md §2) gives the P D form instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from sympy import Abs, diff

from activations import x

from . import _logperiodic as lp
from ._limits import side_limit, taylor_coefficients
from ._pieces import Oracle, Pieces, Undecided, evaluate, merge_spurious, pieces
from ._result import GroupCalcError, Scalings, a
from ._scan import numeric_positive

_A = sympy.Symbol("A", positive=True)
#: Highest Taylor order examined in the Taylor-matching step.
TAYLOR_ORDER = 10


@dataclass
class Analysis:
    """What one pass of the derivation established (mutable while it runs)."""

    cls: str | None = None
    scalings: Scalings | None = None
    singular_n: object = None
    certificate: list = field(default_factory=list)
    hypotheses: list = field(default_factory=list)
    numeric: list = field(default_factory=list)  # steps settled only numerically
    open_steps: list = field(default_factory=list)  # steps left undecided: S is then only a lower bound
    logforms: tuple | None = None  # (x > 0 side, x < 0 side, sigma(0)) when sigma is log-periodic
    e14_applies: bool = True

    def step(self, text):
        self.certificate.append(text)


def _fmt(e):
    return sympy.sstr(e)


def analyse(expr, oracle: Oracle, out: Analysis | None = None) -> Analysis:
    """Derive class, S and phi for ``expr`` (see the module docstring). Steps are written
    into ``out`` as they are established, so a derivation stopped by its budget keeps them."""
    out = Analysis() if out is None else out
    raw = pieces(expr, oracle)
    p = merge_spurious(raw, oracle)
    if p.breaks:
        desc = "; ".join(f"{_fmt(e)} on ({_fmt(lo) if lo is not None else '-oo'}, {_fmt(hi) if hi is not None else 'oo'})"
                         for lo, hi, e in p.intervals())
        out.step(f"Normal form: sigma is analytic on each interval between the break points {list(map(_fmt, p.breaks))}: {desc}; "
                 f"values at the break points {list(map(_fmt, p.values))}.")
    else:
        ext = "".join(f" (at x = {_fmt(t)} by its analytic extension, with value {_fmt(v)} = the limit there)" for t, v in p.removable)
        out.step(f"Normal form: sigma(x) = {_fmt(p.exprs[0])}, one analytic expression on R{ext}.")
    _classify(p, oracle, out)
    if out.cls == "nonlinear":
        _positive_part(p, expr, oracle, out)
        _negative_part(p, expr, oracle, out)
    _sigma_identity(p, oracle, out)
    _hypotheses(p, oracle, out)
    return out


# -- step 2 ------------------------------------------------------------------------------
def _classify(p: Pieces, oracle, out: Analysis):
    if p.breaks:
        out.cls = "nonlinear"
        out.step("Class: nonlinear — sigma is not analytic at the break points (the pieces on either side differ), "
                 "so it is not of the form c x + d.")
        return
    f = p.exprs[0]
    d1 = diff(f, x)
    if oracle.identically_zero(d1):
        out.cls = "constant"
        out.step(f"Class: constant — sigma'(x) = {_fmt(sympy.simplify(d1))} = 0 identically.")
        return
    d2 = diff(f, x, 2)
    if oracle.identically_zero(d2):
        c, d = sympy.simplify(d1.subs(x, 0)), sympy.simplify(evaluate(p, sympy.Integer(0), oracle))
        if c.has(sympy.nan, sympy.zoo):  # 0 is a removable point of the expression: sigma' is constant anyway
            c = sympy.simplify(sympy.cancel(d1))
        if oracle.is_zero(d):
            out.cls = "linear"
            out.scalings = Scalings("all", None, sympy.Integer(-1), a)
            out.step(f"Class: linear — sigma'' = 0 and sigma(0) = 0, so sigma(x) = {_fmt(c)} x with {_fmt(c)} != 0. "
                     "For every invertible A, sigma(A x) = c A x = A sigma(x): G_sigma_n = GL_n(R), phi(A) = A.")
        else:
            out.cls = "affine"
            out.scalings = Scalings("trivial", None, None, a)
            out.step(f"Class: affine — sigma(x) = c x + d with c = {_fmt(c)}, d = {_fmt(d)} != 0. "
                     "sigma(A x) = B sigma(x) for all x means c A x + d 1 = c B x + d B 1: comparing the parts linear in x "
                     "gives B = A (c != 0), and the constant parts give A 1 = 1. So G_sigma_n = {A in GL_n(R) : A 1 = 1} "
                     "(every row sums to 1), phi(A) = A; for n = 1 this is {1}.")
        return
    out.cls = "nonlinear"
    # d2 as computed, not simplified: simplify is for display only here and takes seconds on
    # tanh of a cubic (gelu_tanh), time that the work budget cannot see
    out.step(f"Class: nonlinear — sigma''(x) = {_fmt(d2)} is not identically zero.")


# -- step 3 ------------------------------------------------------------------------------
def _sides(p: Pieces):
    """The pieces adjacent to 0 from the right and the left, with their intervals."""
    if not p.breaks:
        return [(p.exprs[0], sympy.Integer(0), None, 1), (p.exprs[0], None, sympy.Integer(0), -1)]
    return [(p.exprs[-1], sympy.Integer(0), None, 1), (p.exprs[0], None, sympy.Integer(0), -1)]


def _positive_part(p: Pieces, expr, oracle, out: Analysis):
    nonzero = [t for t in p.breaks if not oracle.is_zero(t)]
    if nonzero:
        t = nonzero[0]
        out.step(f"Positive scalings: sigma is not analytic at x = {_fmt(t)} != 0. If sigma(a x) = b sigma(x) with a > 0, b != 0, "
                 "the finite set N of non-analytic points satisfies N = N / a; the largest |t| in N on the side of t is then "
                 "fixed by t -> t / a, so a = 1. S ∩ (0, oo) = {1}.")
        out.scalings = Scalings("trivial", None, None, a)
        return
    sides = _sides(p)
    v0 = p.values[0] if p.breaks else evaluate(p, sympy.Integer(0), oracle)
    # infinitesimal positive homogeneity x sigma'(x) = lambda sigma(x) on each side
    lams, homogeneous = [], True
    for g, lo, hi, sgn in sides:
        if oracle.identically_zero(g, lo, hi):
            continue
        r = x * diff(g, x) / g
        # cheap numeric screen first: x g'/g must take one value on the whole side
        vals = []
        for x0 in (sgn * sympy.Rational(1, 3), sgn * sympy.Rational(7, 5), sgn * sympy.Rational(13, 4)):
            try:
                vals.append(oracle.value(r.subs(x, x0), 30))
            except (Undecided, GroupCalcError):
                vals.append(None)
        if None not in vals and max(vals) - min(vals) > 1e-12:
            homogeneous = False
            break
        r = sympy.simplify(r)
        if x in r.free_symbols and not oracle.identically_zero(diff(r, x), lo, hi):
            homogeneous = False
            break
        if x in r.free_symbols:
            r = sympy.simplify(r.subs(x, sgn))
        lams.append(r)
    if homogeneous and lams and any(not oracle.is_zero(l1 - lams[0]) for l1 in lams[1:]):
        homogeneous = False
    if homogeneous:
        lam = lams[0] if lams else sympy.Integer(0)
        if not oracle.is_zero(lam) and not oracle.is_zero(v0):
            homogeneous = False
    if homogeneous:
        for g, lo, hi, sgn in sides:
            for A in (sympy.Integer(2), sympy.Rational(3, 7)):
                if not oracle.identically_zero(g.subs(x, A * x) - A**lam * g, lo, hi):
                    raise GroupCalcError("internal: homogeneity check failed")
        out.step(f"Positive scalings: x sigma'(x) = ({_fmt(lam)}) sigma(x) holds identically on x > 0 and on x < 0"
                 f"{' and sigma(0) = 0' if not oracle.is_zero(lam) else ''}; integrating, sigma(a x) = a^({_fmt(lam)}) sigma(x) for every a > 0 "
                 f"(checked symbolically at a = 2 and a = 3/7 on both sides). S ⊇ (0, oo) with phi(a) = a^({_fmt(lam)}).")
        out.scalings = Scalings("all", None, None, a**lam)
        return
    # Taylor matching at 0 on a side where the piece is analytic
    for g, lo, hi, sgn in sides:
        if oracle.identically_zero(g, lo, hi):
            continue
        coeffs = []
        dk = g
        # at a removable point (sin(x)/x) the coefficients are those of the analytic extension
        series = None if not _at(g, 0).has(sympy.nan) else taylor_coefficients(g, TAYLOR_ORDER, oracle)
        try:
            for k in range(TAYLOR_ORDER + 1):
                if series is not None:
                    ck = series[k]
                else:
                    if k:
                        dk = diff(dk, x)
                    ck = dk.subs(x, 0) / sympy.factorial(k)
                if ck.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
                    raise Undecided("not analytic at 0")
                coeffs.append(ck)
                nz = [j for j, c in enumerate(coeffs) if not oracle.is_zero(c)]
                if len(nz) >= 2:
                    j, k2 = nz[0], nz[1]
                    side = "x > 0" if sgn > 0 else "x < 0"
                    out.step(f"Positive scalings: on {side} sigma is the analytic function {_fmt(g)}, with Taylor coefficients at 0 "
                             f"c_{j} = {_fmt(coeffs[j])} != 0 and c_{k2} = {_fmt(coeffs[k2])} != 0. sigma(a x) = b sigma(x) with a > 0 "
                             f"keeps {side}, and matching coefficients gives c_k (a^k - b) = 0 for all k: a^{j} = b = a^{k2}, so a = 1. "
                             "S ∩ (0, oo) = {1}.")
                    out.scalings = Scalings("trivial", None, None, a)
                    return
        except Undecided:
            continue
    if _logperiodic_positive(p, oracle, out):
        return
    numeric_positive(expr, oracle, out)


def _at(e, t):
    """e at x = t by substitution (nan when that gives no finite number)."""
    from ._limits import plain_value

    v = plain_value(e, t)
    return sympy.nan if v is None else v


def _logperiodic_positive(p: Pieces, oracle, out: Analysis) -> bool:
    """S ∩ (0, oo) exactly when sigma(±e^t) = C e^(lam t) R(e^(i w t)) on both sides (see
    :mod:`._logperiodic`); False when sigma has no such form."""
    if any(not oracle.is_zero(t) for t in p.breaks):
        return False
    forms = {}
    for g, lo, hi, sgn in _sides(p):
        if oracle.identically_zero(g, lo, hi):
            forms[sgn] = None
            continue
        try:
            f = lp.side_form(g, sgn, oracle)
        except (sympy.PolynomialError, ValueError, TypeError, NotImplementedError, ZeroDivisionError, AttributeError):
            f = None  # sympy could not bring the piece to the form: not log-periodic as far as we can tell
        if f is None:
            return False
        forms[sgn] = f
    present = [f for f in forms.values() if f is not None]
    if not present:
        return False
    v0 = evaluate(p, sympy.Integer(0), oracle)
    res = lp.positive_part(present, v0, oracle)
    if res is None:
        return False
    out.logforms = (forms.get(1), forms.get(-1), v0)
    sides = "; ".join(f.describe() for f in present)
    head = (f"Positive scalings: in log coordinates {sides}. For a = e^s > 0, sigma(a x) = b sigma(x) on a side is the "
            "shift identity P(t + s) = b e^(-lam s) P(t), i.e. R(e^(i w s) z) = c R(z) for rational functions: with R = z^k N/D "
            "in lowest terms this holds exactly when e^(i w s) is an m-th root of unity, m the gcd of the exponents of N and D "
            "(docs/theory.md §10). Both sides together: ")
    if res.kind == "trivial":
        out.step(head + res.reason + ". S ∩ (0, oo) = {1}.")
        out.scalings = Scalings("trivial", None, None, a)
        return True
    if res.kind == "all":
        out.step(head + res.reason + f". S ⊇ (0, oo) with phi(a) = a^({_fmt(res.lam)}).")
        out.scalings = Scalings("all", None, None, a**res.lam)
        return True
    L, lam, eps = res.log_generator, res.lam, res.eps
    g = sympy.simplify(sympy.exp(L))
    b0 = sympy.simplify(eps * sympy.exp(lam * L))
    for f in present:  # the generator's identity itself, once more, on every side
        if not lp.shift_identity(f, f, L, b0, oracle):
            raise Undecided(f"internal: the shift identity for the generator {g} failed")
    phi = a**lam if eps == 1 else a**lam * sympy.cos(sympy.pi * sympy.log(a) / L)
    out.step(head + res.reason + f". So S ∩ (0, oo) = {{{_fmt(g)}^k : k in Z}}, generated by g = e^({_fmt(L)}) = {_fmt(g)}, with "
             f"sigma(g x) = ({_fmt(b0)}) sigma(x) (an exact identity on both sides) and phi(a) = {_fmt(phi)} on it; "
             "no smaller a > 1 works, by the root-of-unity argument.")
    out.scalings = Scalings("discrete", g, None, phi)
    return True


# -- step 4 ------------------------------------------------------------------------------
def _witness_point(p: Pieces, oracle):
    """A point x0 (symbolic in the parameters) with sigma(x0) != 0."""
    cands = []
    if p.breaks:
        cands += [p.breaks[-1] + 1, p.breaks[0] - 1, p.breaks[-1] + sympy.Rational(7, 3), p.breaks[0] - sympy.Rational(7, 3)]
        cands += [(s + t) / 2 for s, t in zip(p.breaks, p.breaks[1:])]
    else:
        cands += [sympy.Integer(1), sympy.Rational(7, 3), sympy.Rational(-5, 4), sympy.Rational(1, 3)]
    for x0 in cands:
        trial = Oracle(oracle.reference)
        try:
            if not trial.is_zero(evaluate(p, x0, trial)):
                oracle.is_zero(evaluate(p, x0, oracle))  # record the same conditions in the real oracle
                return x0
        except Undecided:
            continue
    raise Undecided("no point where sigma is non-zero was found")


def _identity_holds(lhs, oracle) -> bool:
    """Is the formula ``lhs`` (a function of x) identically zero on R, break points included?"""
    q = pieces(lhs, oracle)
    for lo, hi, e in q.intervals():
        if not oracle.identically_zero(e, lo, hi):
            return False
    return all(oracle.is_zero(v) for v in q.values)


def _logperiodic_negative(oracle, out: Analysis):
    """The negative part from the side forms: a = -e^s with s = 0 (a = -1) and, for S+ = g^Z,
    s = log(g)/2 (a = -sqrt(g)); each is two exact shift identities between the sides."""
    fp, fm, v0 = out.logforms
    sc = out.scalings
    cands = [(sympy.Integer(0), [sympy.Integer(1), sympy.Integer(-1)])]
    if sc.positive == "discrete":
        L = sympy.log(sc.generator)
        b_g = sympy.simplify(sc.phi.subs(a, sc.generator))
        if oracle.sign(b_g) > 0:  # c^2 = phi(g) needs phi(g) > 0
            r = sympy.sqrt(b_g)
            cands.append((sympy.simplify(L / 2), [r, -r]))
    tried = []
    for s, cs in cands:
        m = sympy.simplify(-sympy.exp(s))
        for c in cs:
            if (lp.shift_identity(fm, fp, s, c, oracle) and lp.shift_identity(fp, fm, s, c, oracle)
                    and oracle.is_zero(v0 - c * v0)):
                out.step(f"Negative scalings: for a = {_fmt(m)} and c = {_fmt(c)}, sigma(a e^t) = c sigma(e^t) and "
                         f"sigma(-a e^t) = c sigma(-e^t) hold for all t as exact identities between the two sides "
                         f"(and sigma(0) = c sigma(0)), so {_fmt(m)} ∈ S with phi({_fmt(m)}) = {_fmt(c)}. S ∩ (-oo, 0) is the coset "
                         f"{_fmt(m)} S+ (a negative a0 has a0^2 ∈ S+; dividing by a power of g leaves -1 or -sqrt(g)).")
                out.scalings = _with_negative(sc, m, c)
                return
            tried.append(f"a = {_fmt(m)}, c = {_fmt(c)}")
    out.step("Negative scalings: a negative a0 ∈ S has a0^2 ∈ S+, so a0 ∈ -S+ or (for S+ = g^Z) a0 ∈ -sqrt(g) S+; the exact shift "
             f"identities fail for {'; '.join(tried) or 'every candidate'}"
             + (" (phi(g) < 0 rules out -sqrt(g): its c would need c^2 = phi(g))" if sc.positive == "discrete" and len(cands) == 1 else "")
             + ". S holds no negative number.")


def _negative_part(p: Pieces, expr, oracle, out: Analysis):
    if out.logforms is not None:
        _logperiodic_negative(oracle, out)
        return
    sc = out.scalings
    # a = -1: sigma(-x) = c sigma(x) forces c^2 = 1 (apply it twice), so only c = 1, c = -1
    # (and, for symbolic homogeneity degree lambda, c = (-1)^lambda) need testing.
    cands = [sympy.Integer(1), sympy.Integer(-1)]
    if sc.positive == "all":
        lam = _degree(sc.phi)
        if lam is not None and oracle.params_in(lam) and lam.is_integer:
            cands.insert(0, (-1) ** lam)
    for c in cands:
        if _identity_holds(expr.subs(x, -x) - c * expr, oracle):
            out.step(f"Negative scalings: sigma(-x) - ({_fmt(c)}) sigma(x) = 0 identically (checked piece by piece, break points "
                     f"included), so -1 ∈ S with phi(-1) = {_fmt(c)}.")
            out.scalings = _with_negative(sc, sympy.Integer(-1), c)
            return
    why = {"all": "|a0| ∈ S+ = (0, oo), so -1 = a0/|a0| would be in S",
           "trivial": "a0^2 ∈ S+ = {1}, so a0 = -1"}.get(sc.positive, "")
    out.step("Negative scalings: sigma(-x) = c sigma(x) would force c^2 = 1, and neither sigma(-x) - sigma(x) nor "
             f"sigma(-x) + sigma(x) is identically zero, so -1 ∉ S. {('A negative a0 ∈ S is impossible: ' + why + '.') if why else ''}")
    if sc.positive == "discrete":
        m = -sympy.sqrt(sc.generator)
        x0 = _witness_point(p, oracle)
        c = sympy.simplify(evaluate(p, sympy.simplify(m * x0), oracle) / evaluate(p, x0, oracle))
        if _identity_holds(expr.subs(x, m * x) - c * expr, oracle):
            out.step(f"Negative scalings: sigma({_fmt(m)} x) = ({_fmt(c)}) sigma(x) identically, so S is generated by {_fmt(m)}.")
            out.scalings = _with_negative(sc, m, c)
            return
        out.step("Negative scalings: a negative a0 ∈ S has a0^2 = g^k; for k even a0/g^(k/2) = -1, for k odd "
                 f"a0/g^((k-1)/2) = -sqrt(g) = {_fmt(m)} would be in S; neither is. S holds no negative number.")


def _degree(phi):
    """lambda when phi = a**lambda."""
    if phi == a:
        return sympy.Integer(1)
    if isinstance(phi, sympy.Pow) and phi.base == a:
        return phi.exp
    return None


def _with_negative(sc: Scalings, m, c) -> Scalings:
    phi_pos = sc.phi  # valid for a > 0
    if sc.positive == "trivial":
        if c == 1:
            phi = sympy.Integer(1)  # phi(-1) = 1: phi(a) = |a| = 1 on S = {1, -1}
        elif c == -1:
            phi = a
        else:
            phi = c ** ((1 - a) / 2)
        return Scalings("trivial", None, m, phi)
    if sc.positive == "all":
        lam = _degree(phi_pos)
        if lam is not None and lam.is_integer and sympy.simplify(c - (-1) ** lam) == 0:
            phi = a**lam
        elif c == 1:
            phi = phi_pos.subs(a, Abs(a))
        elif c == -1:
            phi = sympy.sign(a) * phi_pos.subs(a, Abs(a))
        else:
            phi = sympy.Piecewise((phi_pos, a > 0), (c * phi_pos.subs(a, Abs(a)), True))
        return Scalings("all", None, m, phi)
    g = sc.generator
    if m == -1 and c in (1, -1):  # phi(a) = c^[a < 0] phi(|a|), written without cases where possible
        lam = _degree(phi_pos.as_independent(sympy.cos)[0]) if phi_pos.has(sympy.cos) else _degree(phi_pos)
        if lam is not None and lam.is_integer and c == (-1) ** lam:
            phi = phi_pos.xreplace({sympy.log(a): sympy.log(Abs(a))})
        elif c == 1:
            phi = phi_pos.subs(a, Abs(a))
        else:
            phi = sympy.sign(a) * phi_pos.subs(a, Abs(a))
        return Scalings("discrete", g, m, phi)
    phi = sympy.Piecewise((phi_pos, a > 0), (c * phi_pos.subs(a, a / m), True))  # a = m g^k: phi(a) = phi(m) phi(a/m)
    return Scalings("discrete", g, m, phi)


# -- step 5 ------------------------------------------------------------------------------
def _sigma_identity(p: Pieces, oracle, out: Analysis):
    s1, s0 = sympy.simplify(evaluate(p, sympy.Integer(1), oracle)), sympy.simplify(evaluate(p, sympy.Integer(0), oracle))
    one_singular = oracle.is_zero(s1)
    if oracle.is_zero(s1 - s0):
        out.singular_n = "all" if one_singular else "all n >= 2"
        out.step(f"sigma(I_n) = sigma(1) I + sigma(0) (1 1^T - I) has eigenvalues sigma(1) + (n-1) sigma(0) (once) and "
                 f"sigma(1) - sigma(0) (n - 1 times). Here sigma(1) = sigma(0) = {_fmt(s1)}: singular for every n >= 2"
                 f"{' and for n = 1 (sigma(1) = 0)' if one_singular else '; for n = 1, sigma(I_1) = sigma(1) != 0'}.")
        return
    ns = []
    if oracle.is_zero(s0):
        ns = [1] if one_singular else []
        why = "sigma(0) = 0, so the eigenvalues are sigma(1) != 0" if not one_singular else "sigma(1) = 0"
    else:
        n_expr = sympy.simplify(1 - s1 / s0)
        if oracle.params_in(n_expr):
            ref = oracle.value(n_expr)
            # a family of parameter values (x**3 + c: n = -1/c): the case holds for all of it,
            # with the singular n as an expression in the parameters (docs/engine.md)
            if abs(ref - round(ref)) < 1e-20 and round(ref) >= 1:
                oracle._record(sympy.Contains(n_expr, sympy.S.Naturals))
                ns = [n_expr]
            else:
                oracle._record(sympy.Not(sympy.Contains(n_expr, sympy.S.Naturals)))
        elif n_expr.is_integer and n_expr >= 1:
            ns = [int(n_expr)]
        why = (f"sigma(1) = {_fmt(s1)}, sigma(0) = {_fmt(s0)}; sigma(1) + (n-1) sigma(0) = 0 exactly when "
               f"n = 1 - sigma(1)/sigma(0) = {_fmt(n_expr)}")
    out.singular_n = ns
    out.step(f"sigma(I_n) = sigma(1) I + sigma(0) (1 1^T - I) (eigenvalues sigma(1) + (n-1) sigma(0), and sigma(1) - sigma(0) "
             f"for n >= 2): {why}. " + (f"Singular for n in {ns}." if ns != [] else "Invertible for every n."))


# -- step 6 ------------------------------------------------------------------------------
def _log_limit(f, oracle):
    """lim sigma as x -> 0 on the side of the form ``f`` (None: a side where sigma vanishes).
    As x -> 0, t = log|x| -> -oo: C e^(lam t) P(t) -> 0 if lam > 0 (P is bounded: continuous
    and periodic); for lam < 0 it is unbounded, and for lam = 0 with P non-constant it
    oscillates (no limit)."""
    if f is None:
        return sympy.Integer(0)
    sg = oracle.sign(f.lam)
    if sg > 0:
        return sympy.Integer(0)
    if sg < 0 or f.periodic:
        return None
    return f.coeff


def _break_behaviour(p: Pieces, i: int, oracle, logforms=None):
    """("continuous" | "discontinuous", text) at break point i, judged by one-sided limits."""
    t, v = p.breaks[i], p.values[i]
    if logforms is not None and oracle.is_zero(t):
        left, right = _log_limit(logforms[1], oracle), _log_limit(logforms[0], oracle)
    else:
        left, right = side_limit(p.exprs[i], t, "-"), side_limit(p.exprs[i + 1], t, "+")
    fmt = lambda lim: "none (no finite limit)" if lim is None else _fmt(lim)  # noqa: E731
    text = f"at {_fmt(t)}: limit from the left {fmt(left)}, from the right {fmt(right)}, value {_fmt(v)}"
    if left is None or right is None or not (oracle.is_zero(left - right) and oracle.is_zero(left - v)):
        return "discontinuous", text
    # for information: one-sided derivatives (difference quotients) at a continuous break point
    from ._limits import plain_value

    def one_sided_derivative(piece, direction):
        # a piece that evaluates with its derivative at t is analytic there: sigma' of the piece
        d = plain_value(diff(piece, x), t)
        return d if d is not None else side_limit((piece - v) / (x - t), t, direction)

    info = Oracle(oracle.reference)  # information only: no conditions on the parameters are recorded
    try:
        dl = one_sided_derivative(p.exprs[i], "-")
        dr = one_sided_derivative(p.exprs[i + 1], "+")
        at_ref = " (at the reference parameter values)" if dl is not None and dr is not None and oracle.params_in(dl - dr) else ""
        if dl is None or dr is None or not info.is_zero(dl - dr):
            text += f"; continuous but not differentiable there{at_ref}"
        else:
            text += f"; continuous and differentiable (sigma' = {_fmt(dl)}) but not analytic there{at_ref}"
    except GroupCalcError:
        text += "; continuous"
    return "continuous", text


def _hypotheses(p: Pieces, oracle, out: Analysis):
    hyp = []
    hyp.append(("non-constant", out.cls != "constant", "sigma' is not identically zero" if out.cls != "constant" else "sigma is constant"))
    hyp.append(("non-linear (sigma' not constant)", out.cls == "nonlinear",
                {"constant": "sigma is constant", "linear": "sigma is linear", "affine": "sigma is affine"}.get(out.cls, "sigma'' is not identically zero")))
    hyp.append(("differentiable off a finite set", True,
                f"analytic off the {len(p.breaks)} break point(s) {list(map(_fmt, p.breaks))}" if p.breaks else "analytic on R"))
    jumps, undecided, notes = [], [], []
    for i, t in enumerate(p.breaks):
        try:
            kind, text = _break_behaviour(p, i, oracle, out.logforms)
        except Undecided as err:
            undecided.append(t)
            notes.append(f"at {_fmt(t)}: continuity undecided ({err})")
            continue
        notes.append(text)
        if kind == "discontinuous":
            jumps.append(t)
    if jumps:
        cont = ("continuous", False, f"discontinuous at {list(map(_fmt, jumps))} (" + "; ".join(notes) + ")")
    elif undecided:
        cont = ("continuous", None, "; ".join(notes))
    else:
        cont = ("continuous", True, ("one-sided limits equal the value at every break point: " + "; ".join(notes)) if notes
                else "analytic on R")
    hyp.append(cont)
    # Whether sigma' vanishes (or is one constant) wherever it exists matters only for a
    # discontinuous sigma (a continuous one would then be constant or affine), where the
    # discontinuity argument is used instead; so these are screened with a throwaway oracle and
    # record no conditions on the parameters (a witness point would otherwise add a spurious case).
    screen = Oracle(oracle.reference)
    all_flat = out.cls == "nonlinear" and all(screen.identically_zero(diff(e, x), lo, hi) for lo, hi, e in p.intervals())
    if out.cls == "nonlinear" and p.breaks and not all_flat:
        # sigma' may still be one constant wherever it exists (x + Heaviside(x)): then the
        # proof of Theorem E.14 (sigma' non-constant) does not apply either
        affine = all(screen.identically_zero(diff(e, x, 2), lo, hi, tries=3) for lo, hi, e in p.intervals())
        slopes = [sympy.simplify(diff(e, x)) for _, _, e in p.intervals()] if affine else [x]
        const = all(x not in sl.free_symbols for sl in slopes)
        if const and all(oracle.is_zero(sl - slopes[0]) for sl in slopes[1:]):
            hyp[1] = ("non-linear (sigma' not constant)", False,
                      f"sigma' = {_fmt(slopes[0])} wherever it exists (sigma jumps at break points but is affine between them)")
    hyp.append(("sigma' not identically zero where it exists", not all_flat,
                "sigma is locally constant off the break points: the proof of Theorem E.14 needs a point with sigma'(x) != 0"
                if all_flat else "sigma' is non-zero somewhere"))
    out.hypotheses = hyp
    if out.cls != "nonlinear":
        return
    if jumps:
        # docs/theory.md §2, discontinuous case: needs only finitely many discontinuities (sigma is
        # analytic off its break points) and at least one
        out.e14_applies = True
        out.step(f"The P D form, by the discontinuity argument (docs/theory.md §2), not Theorem E.14: sigma is discontinuous at "
                 f"{list(map(_fmt, jumps))} and analytic off its finitely many break points. Then x -> sigma((A x)_i) is "
                 "discontinuous exactly on the hyperplanes (A x)_i = t_j, while (B sigma_n(x))_i is continuous off the coordinate "
                 "hyperplanes x_k = t_j; a hyperplane inside a finite union of hyperplanes is one of them, so every row of A is a "
                 "multiple of a coordinate vector: A = P D. Then B is diagonal (sigma is not constant) and sigma(d_i x) = "
                 "phi(d_i) sigma(x): d_i ∈ S. Conversely every such P D is in G_sigma_n.")
    elif undecided:
        out.e14_applies = False
        out.open_steps.append(f"continuity at {list(map(_fmt, undecided))} undecided")
        out.step("Neither Theorem E.14 nor the discontinuity argument could be applied: continuity at "
                 f"{list(map(_fmt, undecided))} is undecided. Established: G_sigma_n contains every P D with D diagonal with "
                 "entries in S.")
    else:
        out.e14_applies = not all_flat and hyp[1][1]
        if out.e14_applies:
            out.step("Theorem E.14 applies (sigma continuous, non-constant, sigma' not constant and not identically zero, "
                     "analytic off finitely many points): every A ∈ G_sigma_n is P D with D diagonal, the diagonal entries lie in "
                     "S = G_sigma_1, and phi(P D) = P diag(phi(d_1), ..., phi(d_n)). Conversely every such P D is in G_sigma_n "
                     "(Lemma E.10 and coordinatewise scaling).")
        else:
            out.step("Theorem E.14 does not apply: sigma' is constant (or zero) wherever it exists, so the step of its proof "
                     "that needs sigma' non-constant fails. Established: G_sigma_n contains every P D with D diagonal with "
                     "entries in S.")
