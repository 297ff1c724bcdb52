"""Log-periodic structure: sigma(±e^t) = C e^(lam t) R(e^(i w t)) on each side of 0.

Functions such as x cos(log|x|), x^2 sin(log|x|), |x| (3 + sin(log|x|)) or
x cos(2 pi log2|x|) have a discrete group S+ = g^Z whose generator (e^pi, e^(2 pi), sqrt(2))
no Taylor argument at 0 can find. In the coordinate t = log|x| they are exponentials times
periodic functions, and the equation sigma(a x) = b sigma(x) becomes a shift equation that is
decided exactly.

**One side.** On x > 0 (x = e^t) or x < 0 (x = -e^t), write sigma(±e^t) = C e^(lam t) P(t)
where P(t) = R(z), z = e^(i w t), R a rational function and w > 0. For a = e^s > 0,
sigma(a x) = b sigma(x) on that side reads P(t + s) = c P(t) with c = b e^(-lam s), that is
R(zeta z) = c R(z) on the unit circle (zeta = e^(i w s)), hence as rational functions.
Write R = z^k N(z) / D(z) in lowest terms with N(0), D(0) != 0. Both N(zeta z)/D(zeta z)
and c zeta^(-k) N/D are reduced forms of one rational function, so they differ by a
constant; comparing constant terms, D(zeta z) = D(z) and N(zeta z) = c zeta^(-k) N(z) = N(z).
So zeta^n = 1 for every exponent n of N and D, i.e. zeta is an m-th root of unity with
m = gcd of those exponents, and then c = zeta^k. The shifts that work are therefore exactly
s in (2 pi / (m w)) Z, with c = e^(2 pi i k / m) = ±1 at the smallest one s1 (c is real
because P is). This is exact: no period is guessed and minimality is part of the argument.
A side where P is constant is positively homogeneous (every s works, c = 1).

**Both sides.** b is one number, and |b| = e^(lam s) on each side, so the two sides must
have the same lam (otherwise S+ = {1}). A shift must work on both sides with the same sign:
the intersection of s1 Z (sign eps1^j at j s1) and s2 Z (sign eps2^j) is L Z with
L = q s1 = p s2 when s1/s2 = p/q in lowest terms (and {0} when the ratio is irrational), and
the signs agree at L when eps1^q = eps2^p, otherwise first at 2 L. sigma(0) != 0 forces b = 1.

**Negative scalings.** a = -e^s maps x > 0 to x < 0: sigma(-e^(s + t)) = c sigma(e^t) and
sigma(e^(s + t)) = c sigma(-e^t) for all t, and sigma(0) = c sigma(0). Each is a shift
identity between the two sides, decided as an identity of rational functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import sympy
from sympy import I, exp, pi

from activations import x

from ._budget import charge
from ._pieces import Oracle, Undecided

t = sympy.Symbol("t", real=True)
_u = sympy.Symbol("u", real=True)
z = sympy.Symbol("z")
_TRIG = (sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc)


@dataclass(frozen=True)
class Side:
    """sigma(sgn e^t) = coeff * e^(lam t) * R(e^(i omega t)); R is None when P is constant.

    ``shift`` is the smallest s > 0 with P(t + s) = eps P(t) (None for constant P).
    """

    sgn: int
    coeff: sympy.Expr
    lam: sympy.Expr
    omega: sympy.Expr | None = None
    R: sympy.Expr | None = None
    shift: sympy.Expr | None = None
    eps: int = 1

    @property
    def periodic(self) -> bool:
        return self.R is not None

    def describe(self) -> str:
        side = "x > 0, x = e^t" if self.sgn > 0 else "x < 0, x = -e^t"
        if not self.periodic:
            return f"on {side}: sigma = ({sympy.sstr(self.coeff)}) e^({sympy.sstr(self.lam)} t)"
        return (f"on {side}: sigma = ({sympy.sstr(self.coeff)}) e^({sympy.sstr(self.lam)} t) P(t) with P(t) = R(e^(i w t)), "
                f"w = {sympy.sstr(self.omega)}, R(z) = {sympy.sstr(self.R)}; P(t + s) = c P(t) exactly for "
                f"s in {sympy.sstr(self.shift)} Z, with c = {self.eps} at s = {sympy.sstr(self.shift)}")


def _czero(c, oracle: Oracle) -> bool:
    """Is the (possibly complex) constant ``c`` zero? Real and imaginary parts separately."""
    c = sympy.expand_complex(sympy.sympify(c))
    re, im = c.as_real_imag()
    return oracle.is_zero(re) and oracle.is_zero(im)


def _linear_in_t(arg):
    """(w, beta) with arg = w t + beta, or None."""
    w = sympy.diff(arg, t)
    if t in w.free_symbols:
        return None
    beta = sympy.expand(arg - w * t)
    if t in beta.free_symbols:
        return None
    return w, beta


def in_log_coordinates(g, sgn: int):
    """g(sgn e^t), with the logarithms of positive quantities expanded."""
    h = g.subs(x, sgn * exp(t))
    h = sympy.expand_log(h, force=True)
    return sympy.factor_terms(sympy.powsimp(h))


def _split_exponential(h):
    """(C, lam, P) with h = C e^(lam t) P(t), the exponential factors pulled out of a product."""
    C, lam, rest = sympy.Integer(1), sympy.Integer(0), []
    for f in sympy.Mul.make_args(h):
        if t not in f.free_symbols:
            C *= f
            continue
        base, e = (f.base, f.exp) if f.is_Pow and t not in f.exp.free_symbols else (f, sympy.Integer(1))
        if isinstance(base, exp):
            lin = _linear_in_t(sympy.expand(base.args[0] * e))
            if lin is not None and not lin[0].has(I):
                lam += lin[0]
                C *= exp(lin[1])
                continue
        rest.append(f)
    return C, lam, sympy.Mul(*rest)


def _poly_exponents(poly, oracle):
    """Exponents of ``poly`` (in z) with non-zero coefficients, decided by the oracle."""
    return sorted(m[0] for m, c in zip(poly.monoms(), poly.coeffs()) if not _czero(c, oracle))


def side_form(g, sgn: int, oracle: Oracle) -> Side | None:
    """The log-periodic form of the piece ``g`` on the side ``sgn`` (+1: x > 0), or None."""
    charge(5)
    h = in_log_coordinates(g, sgn)
    C, lam, P = _split_exponential(h)
    if t not in P.free_symbols:
        return Side(sgn, sympy.simplify(C * P), sympy.simplify(lam))
    atoms = [f for f in P.atoms(sympy.Function) if t in f.free_symbols]
    trig = [f for f in atoms if isinstance(f, _TRIG)]
    dummies = {f: sympy.Dummy() for f in trig}
    if t in P.xreplace(dummies).free_symbols:
        return None  # t enters otherwise than through sin, cos, ... of linear arguments
    lins = []
    for f in trig:
        lin = _linear_in_t(f.args[0])
        if lin is None or lin[0].has(I):
            return None
        lins.append(lin)
    w1 = lins[0][0]
    ratios = [sympy.simplify(w / w1) for w, _ in lins]
    if not all(r.is_Rational for r in ratios):
        return None  # several incommensurable frequencies: not periodic
    den = 1
    for r in ratios:
        den = den * r.q // gcd(den, r.q)
    nums = [int(r * den) for r in ratios]
    gnum = 0
    for n in nums:
        gnum = gcd(gnum, abs(n))
    omega = w1 * gnum / den
    ns = [n // gnum for n in nums]
    if oracle.sign(omega) < 0:
        omega, ns = -omega, [-n for n in ns]
    Pu = P.xreplace({f: f.func(n * _u + beta) for f, n, (_, beta) in zip(trig, ns, lins)})
    charge(5)
    Rz = sympy.expand(Pu.rewrite(exp).subs(_u, -I * sympy.log(z)), power_exp=True)
    Rz = sympy.cancel(sympy.together(Rz))
    num, dnm = sympy.fraction(Rz)
    if not (num.is_polynomial(z) and dnm.is_polynomial(z)):
        return None
    pn, pd = sympy.Poly(num, z), sympy.Poly(dnm, z)
    en, ed = _poly_exponents(pn, oracle), _poly_exponents(pd, oracle)
    if not en or not ed:
        return None
    if ed[-1] > ed[0] and en[-1] > en[0]:
        # lowest terms: the reduced numerator and denominator must have no common root
        n1 = sympy.Poly(sum(pn.coeff_monomial(z**e) * z ** (e - en[0]) for e in en), z)
        d1 = sympy.Poly(sum(pd.coeff_monomial(z**e) * z ** (e - ed[0]) for e in ed), z)
        charge(10)
        if _czero(sympy.resultant(n1.as_expr(), d1.as_expr(), z), oracle):
            return None
        # P must be finite for every real t: no root of D on the unit circle (else sigma has poles)
        dnum = sympy.Poly([complex(sympy.N(oracle.at_reference(co), 30)) for co in d1.all_coeffs()], z)
        if any(abs(abs(complex(r)) - 1) < 1e-9 for r in dnum.nroots(n=30)):
            return None
    k = en[0] - ed[0]
    m = 0
    for e in [e - en[0] for e in en] + [e - ed[0] for e in ed]:
        m = gcd(m, e)
    if m == 0:  # R = const * z^k: real only when k = 0, and then P is constant
        return Side(sgn, sympy.simplify(C * P), sympy.simplify(lam)) if k == 0 else None
    if (2 * k) % m:
        return None  # c = e^(2 pi i k / m) not real: impossible for a real P
    eps = 1 if k % m == 0 else -1
    shift = sympy.simplify(2 * pi / (m * omega))
    return Side(sgn, sympy.simplify(C), sympy.simplify(lam), omega, Rz, shift, eps)


# -- both sides ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PositivePart:
    """S ∩ (0, oo) from the side forms: 'trivial', 'all' (b = a^lam) or 'discrete'
    (generator e^L with phi(e^L) = eps e^(lam L))."""

    kind: str
    lam: sympy.Expr
    log_generator: sympy.Expr | None
    eps: int
    reason: str


def positive_part(forms: list, v0, oracle: Oracle) -> PositivePart | None:
    """Combine the side forms (sides where sigma vanishes left out); None if undecidable."""
    lam = forms[0].lam
    for f in forms[1:]:
        if not oracle.is_zero(f.lam - lam):
            return PositivePart("trivial", lam, None, 1,
                                f"|b| = a^({sympy.sstr(lam)}) on one side and a^({sympy.sstr(f.lam)}) on the other, so a = 1")
    periodic = [f for f in forms if f.periodic]
    if not periodic:
        if not oracle.is_zero(lam) and not oracle.is_zero(v0):
            return PositivePart("trivial", lam, None, 1, "sigma(0) != 0 forces b = 1 = a^lam, so a = 1")
        return PositivePart("all", lam, None, 1, f"every a > 0 works with b = a^({sympy.sstr(lam)})")
    L, eps = periodic[0].shift, periodic[0].eps
    why = [f"shifts s in {sympy.sstr(L)} Z on one side"]
    for f in periodic[1:]:
        r = sympy.simplify(L / f.shift)
        if r.is_rational is False:  # provably irrational (sqrt(2), ...): s1 Z ∩ s2 Z = {0}
            return PositivePart("trivial", lam, None, 1, f"the shift groups {sympy.sstr(L)} Z and {sympy.sstr(f.shift)} Z "
                                f"meet only in 0 (their ratio {sympy.sstr(r)} is irrational)")
        if not r.is_Rational:
            return None  # irrationality not provable here (pi / log 2, ...): leave to the scan
        p_, q_ = int(r.p), int(r.q)
        e1, e2 = eps**q_, f.eps**p_
        L = q_ * L
        if e1 == e2:
            eps = e1
        else:
            L, eps = 2 * L, 1
        why.append(f"and {sympy.sstr(f.shift)} Z on the other: common shifts {sympy.sstr(sympy.simplify(L))} Z with matching signs")
    if len(periodic) < len(forms) and eps == -1:
        L, eps = 2 * L, 1
        why.append("the homogeneous side needs c = +1: doubled")
    if not oracle.is_zero(v0) and (eps == -1 or not oracle.is_zero(lam)):
        if not oracle.is_zero(lam):
            return PositivePart("trivial", lam, None, 1, "sigma(0) != 0 forces b = 1, impossible with lam != 0")
        L, eps = 2 * L, 1
        why.append("sigma(0) != 0 forces b = 1: doubled")
    return PositivePart("discrete", lam, sympy.simplify(L), eps, "; ".join(why))


def _shifted(f: Side, s):
    """(C', R') with h_f(t + s) = C' e^(lam t) R'(e^(i w t))."""
    if not f.periodic:
        return f.coeff * exp(f.lam * s), None
    zeta = sympy.simplify(exp(I * f.omega * s))
    return f.coeff * exp(f.lam * s), f.R.subs(z, zeta * z)


def shift_identity(fa: Side | None, fb: Side | None, s, c, oracle: Oracle) -> bool:
    """Exactly: h_a(t + s) = c h_b(t) for all real t (None = a side where sigma vanishes)."""
    try:
        return _shift_identity(fa, fb, s, c, oracle)
    except (sympy.PolynomialError, ValueError, TypeError, NotImplementedError, ZeroDivisionError) as err:
        raise Undecided(f"cannot decide a shift identity: {type(err).__name__}") from None


def _shift_identity(fa, fb, s, c, oracle) -> bool:
    charge(5)
    if fa is None or fb is None:
        return fa is None and fb is None
    if not oracle.is_zero(fa.lam - fb.lam):
        return False
    ca, ra = _shifted(fa, s)
    cb, rb = fb.coeff * c, fb.R
    if (ra is None) != (rb is None):
        return False  # a constant and a non-constant periodic function
    if ra is None:
        return oracle.is_zero(sympy.simplify(ca - cb))
    q = sympy.simplify(fb.omega / fa.omega)
    if not q.is_Rational:
        return False  # different fundamental frequencies cannot give equal periodic functions
    # common base frequency w = omega_a / q.q: z_a = z^(q.q), z_b = z^(q.p)
    diff = sympy.together(ca * ra.subs(z, z ** int(q.q)) - cb * rb.subs(z, z ** int(q.p)))
    num = sympy.numer(diff)
    num = sympy.expand(num)
    if num == 0:
        return True
    if not num.is_polynomial(z):
        raise Undecided(f"cannot compare {num} as a polynomial in z")
    return all(_czero(co, oracle) for co in sympy.Poly(num, z).coeffs())
