"""Numeric verification of intertwiner groups, independent of the symbolic engine.

Two complementary checks:

* :func:`intertwining_residual` / :func:`check_group`: the largest relative residual of
  :math:`\\sigma(A x) - \\phi(A)\\sigma(x)` over sampled claimed elements ``A``;
* :func:`search_scalings`: a numeric search for :math:`S = G_{\\sigma_1}` of any black-box
  elementwise callable (numpy or torch): a log-spaced scan of ``a`` over both signs, with
  refinement of every local minimum, of the best-fit residual of
  :math:`\\sigma(a x) = b\\,\\sigma(x)`.

:func:`check` runs both against the engine's answer and returns an immutable
:class:`CheckReport`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ._groups import IntertwinerGroup, _rng

__all__ = [
    "CheckReport", "ScalingSearch", "check", "check_group", "compare_search",
    "intertwining_residual", "best_intertwiner_residual", "search_scalings", "resolve_activation",
]

#: Default tolerance on the relative residuals, when computing in float64.
DEFAULT_TOL = 1e-6


# Black-box callables ------------------------------------------------------------------
def _as_numpy_callable(fn):
    """Wrap ``fn`` so it maps float64 numpy arrays to numpy arrays.

    numpy is tried first; torch is imported only if ``fn`` refuses a numpy array or
    returns a tensor (duck-typed: anything with ``detach``).
    """
    state = {"torch": None}

    def _to_numpy(out):
        if hasattr(out, "detach"):
            out = out.detach()
            if hasattr(out, "cpu"):
                out = out.cpu()
            out = out.numpy()
        return np.asarray(out, dtype=float)

    def call(x):
        x = np.asarray(x, dtype=float)
        if state["torch"] is None:
            try:
                with np.errstate(all="ignore"):
                    out = fn(x)
                if not hasattr(out, "detach"):
                    return np.broadcast_to(np.asarray(out, dtype=float), x.shape).copy()
            except (TypeError, AttributeError):
                pass
            state["torch"] = True
        import torch  # only for callables that need it

        device, dtype = "cpu", torch.float64
        params = getattr(fn, "parameters", None)
        if callable(params):
            first = next(iter(params()), None)
            if first is not None:
                device = first.device
                dtype = first.dtype if first.dtype.is_floating_point else dtype
        with torch.no_grad():
            out = fn(torch.as_tensor(x, dtype=dtype, device=device))
        return np.broadcast_to(_to_numpy(out), x.shape).copy()

    return call


def _relative(diff, *refs):
    scale = max([float(np.max(np.abs(r))) if np.size(r) else 0.0 for r in refs] + [1e-300])
    return float(np.max(np.abs(diff))) / scale


def _relative_rows(diff, *refs):
    """Largest over rows of ``max|diff_i| / max(|ref_i|)``: every output coordinate is judged
    on its own scale (one small coordinate must not hide behind a large one)."""
    diff = np.abs(np.asarray(diff, dtype=np.float64))
    scale = np.max(np.stack([np.abs(np.asarray(r, dtype=np.float64)) for r in refs]), axis=(0, 2))
    err = np.max(diff, axis=1)
    with np.errstate(all="ignore"):
        rel = np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), np.where(err > 0, np.inf, 0.0))
    return float(np.max(rel)) if rel.size else 0.0


# Residuals ----------------------------------------------------------------------------
def intertwining_residual(sigma, A, phi_A, x) -> float:
    """Largest over output coordinates i of
    ``max_x |sigma(A x)_i - (phi_A sigma(x))_i| / max_x max(|sigma(A x)_i|, |(phi_A sigma(x))_i|)``.

    ``x`` is an (n, m) array of m input vectors. Non-finite outputs count as a failure
    (``inf``).
    """
    A, phi_A, x = np.asarray(A), np.asarray(phi_A), np.asarray(x)
    with np.errstate(all="ignore"):
        lhs = np.asarray(sigma(A @ x))
        rhs = phi_A @ np.asarray(sigma(x))
    if not (np.all(np.isfinite(lhs)) and np.all(np.isfinite(rhs))):
        return math.inf
    return _relative_rows(lhs - rhs, lhs, rhs)


def best_intertwiner_residual(sigma, A, x) -> float:
    """The residual of the best linear B (least squares) with ``sigma(A x) ≈ B sigma(x)``.

    Needs no phi: a large value shows that *no* matrix intertwines ``A`` (used for
    specificity). ``x`` should hold many more columns than ``n``.
    """
    A, x = np.asarray(A, dtype=float), np.asarray(x, dtype=float)
    with np.errstate(all="ignore"):
        lhs = np.asarray(sigma(A @ x), dtype=float)
        s = np.asarray(sigma(x), dtype=float)
    if not (np.all(np.isfinite(lhs)) and np.all(np.isfinite(s))):
        return math.inf
    # Solve B s = lhs  <=>  s^T B^T = lhs^T.
    Bt, *_ = np.linalg.lstsq(s.T, lhs.T, rcond=None)
    return _relative_rows(lhs - Bt.T @ s, lhs)


def _inputs(n, m, rng, scale=2.0):
    return rng.normal(0.0, scale, (n, m))


def check_group(sigma, group: IntertwinerGroup, n: int = 4, trials: int = 20, rng=None, m: int = 64) -> tuple:
    """Residuals of sigma(A x) = phi(A) sigma(x) for ``trials`` sampled elements of G_n.

    Returns a tuple of floats, one per trial (each the max over m random inputs).
    """
    rng = _rng(rng)
    out = []
    for _ in range(trials):
        A = group.sample(n, rng)
        out.append(intertwining_residual(sigma, A, group.phi(A), _inputs(n, m, rng)))
    return tuple(out)


# The numeric search over scalings -----------------------------------------------------
def _probe_points(rng):
    mags = np.logspace(-3, 3, 121)
    return np.concatenate([mags, -mags, np.linspace(-8, 8, 161), rng.normal(0.0, 3.0, 120)])


@dataclass(frozen=True)
class ScalingSearch:
    """A numerically estimated S = G_sigma_1 with its evidence.

    Attributes
    ----------
    positive : {"trivial", "all", "discrete"}
    generator : float or None
        The estimated g > 1 when ``positive == "discrete"``.
    negative : float or None
        The negative element closest to -1 from below that was found, or None.
    phi : tuple of (a, b)
        Best-fit ``b`` with sigma(a x) ≈ b sigma(x) at the elements found.
    scan : tuple of (a, residual)
        The scan (both signs); ``residual`` is the largest pointwise relative misfit.
    found : tuple of float
        Every non-identity element found after refinement.
    tolerance : float
    a_range : (float, float)
    notes : tuple of str
    """

    positive: str
    generator: float | None
    negative: float | None
    phi: tuple
    scan: tuple = field(repr=False)
    found: tuple
    tolerance: float
    a_range: tuple
    notes: tuple = ()

    def describe(self) -> str:
        pos = {"trivial": "{1}", "all": "(0, oo)"}.get(self.positive) or f"{{{self.generator:.6g}^k : k in Z}}"
        neg = "" if self.negative is None else f" and its multiples by {self.negative:.6g}"
        return f"S ≈ {pos}{neg} (scanned |a| in [{self.a_range[0]:g}, {self.a_range[1]:g}])"

    def estimated_group(self, label: str = "estimated", tolerance: float = 1e-6) -> IntertwinerGroup:
        """The monomial group of the estimated S, numbers recognised by ``sympy.nsimplify``.

        phi is fitted as ``|a|**p`` (times ``sign(a)`` when phi is negative at the negative
        representative), p = the median of log phi(a) / log a over the positive samples —
        the form of every continuous homomorphism; it is an estimate, to compare with
        :meth:`IntertwinerGroup.equals`.
        """
        import sympy

        from ._result import Scalings, a

        def exact(v):
            return sympy.nsimplify(v, [sympy.pi, sympy.E], tolerance=tolerance * max(1.0, abs(v)))

        gen = None if self.generator is None else exact(self.generator)
        neg = None if self.negative is None else exact(self.negative)
        ps = [math.log(b) / math.log(x) for x, b in self.phi if x > 0 and abs(math.log(x)) > 1e-9 and b > 0]
        power = sympy.nsimplify(float(np.median(ps)), rational=True, tolerance=tolerance) if ps else sympy.Integer(1)
        phi = sympy.Abs(a) ** power
        at_neg = [b for x, b in self.phi if self.negative is not None and abs(x - self.negative) < 1e-9 * abs(x)]
        if at_neg and at_neg[0] < 0:
            phi = sympy.sign(a) * phi
        odd = bool(at_neg and at_neg[0] < 0)
        if neg is None or (power.is_integer and bool(power % 2 == (1 if odd else 0))):
            phi = a**power  # the same function on S, written plainly
        return IntertwinerGroup("monomial", Scalings(self.positive, gen, neg, phi), label, "verified-numerically")

    def to_json(self) -> dict:
        return {
            "positive_scalings": self.positive,
            "generator": self.generator,
            "negative_scalings": self.negative is not None,
            "negative_representative": self.negative,
            "phi_samples": [[a, b] for a, b in self.phi],
            "found": list(self.found),
            "tolerance": self.tolerance,
            "a_range": list(self.a_range),
            "scan_points": len(self.scan),
            "scan_min_residual_off_identity": min((r for a, r in self.scan if abs(a - 1) > 0.05), default=None),
            "notes": list(self.notes),
        }


#: Magnitudes below this count as zero in the pointwise relative residual (underflow noise).
_TINY = 1e-280


def _fit(f0, fa):
    """Best b and residual of ``fa ≈ b f0`` (rows of ``fa`` = values of a).

    ``b`` is the median of the ratios fa_i / f0_i; the residual is the largest pointwise
    relative error ``|fa_i - b f0_i| / (|fa_i| + |b f0_i|)`` over the points where both are
    finite. Pointwise errors keep every probe point in play whatever the dynamic range of
    sigma (an L2 fit would be decided by the largest values alone, e.g. for exp).
    """
    ok = np.isfinite(f0)[None, :] & np.isfinite(fa)
    f0m = np.where(ok, f0[None, :], 0.0)
    fam = np.where(ok, fa, 0.0)
    use = ok & (np.abs(f0m) > _TINY)
    with np.errstate(all="ignore"):
        ratio = np.where(use, fam / np.where(use, f0m, 1.0), np.nan)
        b = np.nanmedian(np.where(use.any(axis=1, keepdims=True), ratio, 1.0), axis=1) if ratio.size else np.ones(len(fa))
        b = np.where(np.isfinite(b), b, 0.0)
        bf = b[:, None] * f0m
        err = np.abs(fam - bf) / (np.abs(fam) + np.abs(bf) + _TINY)
    err = np.where(ok, err, 0.0)
    r = np.max(err, axis=1) if err.shape[1] else np.zeros(len(fa))
    # phi(a) = 0 is not invertible: a is not in S (unless sigma vanishes on the probe).
    r = np.where((b == 0) & np.any(use, axis=1), 1.0, r)
    # Too few usable points: no evidence either way; count as a failure.
    r = np.where(ok.sum(axis=1) < 0.5 * f0.size, 1.0, r)
    return b, r


def search_scalings(sigma, *, a_range=(1e-3, 1e3), points: int = 241, tol: float = DEFAULT_TOL, rng=0,
                    max_refine: int = 24) -> ScalingSearch:
    """Estimate S = G_sigma_1 of a black-box elementwise callable, with no formula.

    For each ``a`` on a log-spaced grid of both signs (``points`` per sign over
    ``a_range``, plus a = ±1) ``b`` in ``sigma(a x) ≈ b sigma(x)`` is the median of the
    ratios on fixed probe points ``x`` (magnitudes 1e-3..1e3 of both signs, a dense band in
    [-8, 8] and random normals), and the residual is the largest pointwise relative error
    ``|sigma(a x_i) - b sigma(x_i)| / (|sigma(a x_i)| + |b sigma(x_i)|)`` (see ``_fit``).
    Every grid point counts as an element when its residual is below ``tol``; every local
    minimum of the residual below 0.1 is refined with bounded Brent search in ``log|a|``.

    The verdict: S+ = (0, oo) when every positive grid point passes; g^Z when isolated
    elements other than 1 are found (log g fitted by least squares over all of them);
    {1} otherwise; the negative part from the same scan on a < 0. The search cannot see a
    generator outside ``a_range`` nor behaviour beyond |x| = 1e3.

    ``sigma`` may be a numpy function or a torch function/module (torch is imported only
    when ``sigma`` refuses numpy input).
    """
    from scipy.optimize import minimize_scalar

    if not callable(sigma):
        raise ValueError(f"Argument 'sigma' must be callable, not {type(sigma).__name__}.")
    lo, hi = a_range
    if not (0 < lo < 1 < hi):
        raise ValueError(f"Argument 'a_range' must satisfy 0 < lo < 1 < hi, not {a_range!r}.")
    if points < 11:
        raise ValueError(f"Argument 'points' must be at least 11, not {points!r}.")
    f = _as_numpy_callable(sigma)
    x = _probe_points(_rng(rng))
    f0 = f(x)
    t = np.linspace(math.log(lo), math.log(hi), points)
    t = np.unique(np.concatenate([t, [0.0]]))
    notes = []
    if not np.any(np.isfinite(f0) & (f0 != 0)):
        notes.append("sigma is zero (or not finite) on every probe point")

    def residual_at(avals):
        b, r = _fit(f0, f(np.outer(avals, x)))
        return b, r

    results = {}
    for sign in (1.0, -1.0):
        avals = sign * np.exp(t)
        b, r = residual_at(avals)
        results[sign] = (avals, b, r)

    def refine(sign):
        avals, b, r = results[sign]
        found = []
        cand = [i for i in range(1, len(t) - 1) if r[i] <= r[i - 1] and r[i] <= r[i + 1] and r[i] < 0.1]
        if r[0] < min(0.1, r[1]):
            cand.append(0)
        if r[-1] < min(0.1, r[-2]):
            cand.append(len(t) - 1)
        cand = sorted(cand, key=lambda i: r[i])[:max_refine]
        for i in cand:
            if sign > 0 and t[i] == 0.0:
                continue
            if r[i] < tol:
                found.append(float(avals[i]))
                continue
            left, right = t[max(i - 1, 0)], t[min(i + 1, len(t) - 1)]
            res = minimize_scalar(lambda s: float(residual_at(np.array([sign * math.exp(s)]))[1][0]),
                                  bounds=(left, right), method="bounded", options={"xatol": 1e-13})
            if res.fun < tol:
                found.append(sign * math.exp(float(res.x)))
        return sorted(set(found))

    avals_p, b_p, r_p = results[1.0]
    avals_n, b_n, r_n = results[-1.0]
    pos_pass = r_p < tol
    generator = None
    if np.all(pos_pass):
        positive = "all"
        found_p = []
    else:
        found_p = [v for v in refine(1.0) if abs(math.log(v)) > 1e-6]
        if found_p:
            positive = "discrete"
            cands = [v if v > 1 else 1 / v for v in found_p]
            g0 = min(cands)
            # Least-squares fit of log g over every element found: log v_i ≈ k_i log g.
            ks = np.array([round(math.log(v) / math.log(g0)) for v in found_p], dtype=float)
            logs = np.log(np.array(found_p))
            generator = float(math.exp(np.sum(ks * logs) / np.sum(ks * ks)))
            bad = [v for v in found_p if abs(math.log(v) / math.log(generator) - round(math.log(v) / math.log(generator))) > 1e-4]
            if bad:
                notes.append(f"elements {bad} are not powers of the estimated generator {generator:.6g}")
            if pos_pass.mean() > 0.5:
                notes.append("most positive grid points pass but not all: S+ may be dense on part of the range")
        else:
            positive = "trivial"
    neg_pass = r_n < tol
    negative = None
    if np.all(neg_pass):
        negative = -1.0
        found_n = []
        if positive != "all":
            notes.append("every negative scaling passes but not every positive one: inconsistent with a group")
    else:
        found_n = refine(-1.0)
        if found_n:
            if positive == "discrete":
                g = generator
                c = min(found_n, key=lambda v: abs(math.log(-v)))  # the one nearest -1 is the most accurate
                k = math.floor(math.log(-c) / math.log(g) + 1e-9)
                negative = c / g**k
                if abs(negative + g) < 1e-6 * g:
                    negative = -1.0
            else:
                negative = min(found_n, key=lambda v: abs(v + 1))
                if positive == "trivial" and abs(negative + 1) > 1e-6:
                    notes.append(f"negative element {negative:.6g} found with trivial positive part: inconsistent")
            if positive == "all" and neg_pass.mean() < 1:
                notes.append("some but not all negative scalings pass while S+ = (0, oo)")
    if positive == "all" and np.any(neg_pass) and negative is None:
        notes.append("isolated negative scalings pass")

    # phi samples: at the elements found, or a few grid points when continuous.
    sample_as = []
    if positive == "all":
        sample_as += [0.25, 0.5, 2.0, 3.0]
    sample_as += [v for v in found_p[:6]]
    if negative is not None:
        sample_as += [negative] + ([2 * negative, 0.5 * negative] if positive == "all" else [])
        sample_as += [v for v in found_n[:4]]
    sample_as = sorted(set(sample_as))
    phi = ()
    if sample_as:
        bs, _ = residual_at(np.array(sample_as))
        phi = tuple((float(a_), float(b_)) for a_, b_ in zip(sample_as, bs))
    scan = tuple((float(a_), float(r_)) for a_, r_ in zip(np.concatenate([avals_n[::-1], avals_p]), np.concatenate([r_n[::-1], r_p])))
    found = tuple(sorted(set(found_p) | set(found_n)))
    return ScalingSearch(positive, generator, negative, phi, scan, found, float(tol), (float(lo), float(hi)), tuple(notes))


def compare_search(search: ScalingSearch, grp: IntertwinerGroup, *, rtol: float = 1e-6) -> tuple:
    """Flags where the search and the group disagree on S (and phi); empty when they agree.

    Each flag starts with ``"missed:"`` (the search found symmetries the group lacks),
    ``"unsound:"`` (the group claims scalings or phi values the search refutes) or
    ``"differs:"`` (another disagreement, e.g. a generator outside the scanned range).
    """
    s = grp.one_dimensional()
    flags = []
    order = {"trivial": 0, "discrete": 1, "all": 2}
    if order[search.positive] > order[s.positive]:
        flags.append(f"missed: numeric search finds S+ {search.positive} but the group has {s.positive}")
    elif order[search.positive] < order[s.positive]:
        flags.append(f"unsound: the group claims S+ {s.positive} but the numeric search finds {search.positive}")
    elif s.positive == "discrete":
        ge, gs = float(s.generator), search.generator
        k = math.log(ge) / math.log(gs)
        if abs(k - 1) > 1e-5:
            kind = "missed" if abs(k - round(k)) < 1e-5 else "differs"
            flags.append(f"{kind}: generator {ge:.8g} claimed, numeric search finds {gs:.8g}")
    if (search.negative is None) != (s.negative is None):
        if search.negative is not None:
            flags.append(f"missed: numeric search finds negative scaling {search.negative:.6g}, the group has none")
        else:
            flags.append(f"unsound: the group claims negative scalings ({s.negative}) the numeric search does not find")
    elif s.negative is not None and abs(float(s.negative) - search.negative) > 1e-5 * abs(search.negative):
        flags.append(f"differs: negative representative {s.negative} claimed, numeric search finds {search.negative:.8g}")
    # phi at the search's elements that the group also contains.
    for a_, b_ in search.phi:
        if grp.scalar_in_s([a_], tol=1e-5)[0]:
            claimed = float(grp.phi_scalar(np.array([a_]))[0])
            if not abs(claimed - b_) <= max(rtol, 1e-5) * max(abs(b_), abs(claimed), 1e-300):
                flags.append(f"unsound: phi({a_:.6g}) = {claimed:.8g} claimed, best fit is {b_:.8g}")
    return tuple(flags)


# The report ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckReport:
    """The outcome of :func:`check`; ``to_json()`` gives a JSON-ready dict.

    ``passed`` is true when every sampled claimed element intertwines (residual below
    ``tolerance``), the claimed scalings and phi survive the scan, and the numeric search
    agrees with the group (no flags).
    """

    activation: str
    parameters: tuple
    group: IntertwinerGroup
    n: int
    trials: int
    residuals: tuple = field(repr=False)
    tolerance: float
    claimed_scalings: tuple = field(repr=False)  # (a, residual of sigma(a x) = phi(a) sigma(x))
    specificity: float | None
    search: ScalingSearch
    flags: tuple

    @property
    def max_residual(self) -> float:
        return max(self.residuals, default=0.0)

    @property
    def max_scalar_residual(self) -> float:
        return max((r for _, r in self.claimed_scalings), default=0.0)

    @property
    def passed(self) -> bool:
        return not self.flags

    def to_json(self) -> dict:
        return {
            "activation": self.activation,
            "parameters": {k: v for k, v in self.parameters},
            "group": {
                "status": self.group.status,
                "kind": self.group.kind,
                "description": self.group.describe(),
                "repr": repr(self.group),
                "positive_scalings": self.group.one_dimensional().positive,
                "generator": None if self.group.one_dimensional().generator is None else float(self.group.one_dimensional().generator),
                "negative_representative": None if self.group.one_dimensional().negative is None else float(self.group.one_dimensional().negative),
                "phi": str(self.group.one_dimensional().phi),
            },
            "n": self.n,
            "trials": self.trials,
            "tolerance": self.tolerance,
            "max_residual": _finite_or_str(self.max_residual),
            "max_scalar_residual": _finite_or_str(self.max_scalar_residual),
            "claimed_scalings_checked": len(self.claimed_scalings),
            "specificity_residual": None if self.specificity is None else _finite_or_str(self.specificity),
            "search": self.search.to_json(),
            "flags": list(self.flags),
            "passed": self.passed,
        }

    def dumps(self, **kw) -> str:
        return json.dumps(self.to_json(), **kw)

    def describe(self) -> str:
        lines = [
            f"activation   {self.activation}" + (f"  ({', '.join(f'{k}={v}' for k, v in self.parameters)})" if self.parameters else ""),
            f"group        {self.group.describe()}   [engine status: {self.group.status}]",
            f"claimed      max residual {self.max_residual:.3g} over {self.trials} sampled elements of G_{self.n}; "
            f"{self.max_scalar_residual:.3g} over {len(self.claimed_scalings)} scalings in S (tolerance {self.tolerance:g})",
        ]
        if self.specificity is not None:
            lines.append(f"specificity  best linear fit for a random orthogonal matrix leaves residual {self.specificity:.3g}")
        lines.append(f"search       {self.search.describe()}")
        if self.search.phi:
            lines.append("             phi fits: " + ", ".join(f"phi({a_:.4g}) ≈ {b_:.6g}" for a_, b_ in self.search.phi[:6]))
        for note in self.search.notes:
            lines.append(f"note         {note}")
        lines.append("verdict      " + ("agrees" if self.passed else "DISAGREES"))
        lines += [f"  - {f}" for f in self.flags]
        return "\n".join(lines)


def _finite_or_str(v):
    return float(v) if math.isfinite(v) else str(v)


def resolve_activation(activation, params: dict | None = None):
    """(label, numpy callable, bound parameter dict) for a catalogue name or a formula."""
    import sympy

    import activations as acts

    params = dict(params or {})
    if isinstance(activation, acts.Activation):
        act = activation
    else:
        if not isinstance(activation, str):
            raise ValueError(f"Argument 'activation' must be a name or a formula, not {type(activation).__name__}.")
        try:
            act = acts.get(activation)
        except KeyError as err:
            looks_like_name = activation.strip().replace("_", "").isalnum()
            try:
                expr = acts.parse_formula(activation)
            except acts.FormulaError as ferr:
                raise ValueError(err.args[0] if looks_like_name else str(ferr)) from None
            if looks_like_name and acts.x not in expr.free_symbols and not expr.is_number:
                raise ValueError(err.args[0]) from None
            free = sorted(s.name for s in expr.free_symbols if s != acts.x)
            unknown = sorted(set(params) - set(free))
            if unknown:
                raise ValueError(f"formula {activation!r} has no parameter(s) {unknown} (parameters: {free or 'none'})")
            missing = [p for p in free if p not in params]
            if missing:
                raise ValueError(f"formula {activation!r} needs values for parameter(s) {missing} (give --param NAME=VALUE)")
            values = {k: sympy.nsimplify(v, rational=True) for k, v in params.items()}
            fn = acts.lambdify_numpy(expr.subs({sympy.Symbol(k, real=True): v for k, v in values.items()}))
            return activation.strip(), fn, values
    values = act.bind(**params)
    fl = {k: float(v) for k, v in values.items()}
    return act.name, (lambda z: act(z, **fl)), values


def check(activation, params: dict | None = None, *, n: int = 4, trials: int = 20, rng=0, tol: float = DEFAULT_TOL,
          group: IntertwinerGroup | None = None, sigma=None, search_kw: dict | None = None) -> CheckReport:
    """Check the engine's group of an activation numerically.

    Parameters
    ----------
    activation : str or Activation
        A catalogue name or a formula (or, with ``sigma`` and ``group`` given, any label).
    params : dict, optional
        Parameter values (catalogue defaults for the rest).
    n, trials : int
        Dimension of the sampled elements of G_n, and how many are sampled.
    rng : int or numpy Generator
    tol : float
        Tolerance on every relative residual (float64 computations).
    group : IntertwinerGroup, optional
        The group to check; by default the engine's (:func:`groupcalc.group`).
    sigma : callable, optional
        The elementwise activation; by default the catalogue's / the formula's numpy version.

    Returns
    -------
    CheckReport
    """
    from ._groups import _check_n
    from ._groups import group as engine_group

    n = _check_n(n)
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"Argument 'trials' must be a positive integer, not {trials!r}.")
    rng = _rng(rng)
    if sigma is None:
        label, sigma, values = resolve_activation(activation, params)
    else:
        label, values = str(activation), dict(params or {})
        sigma = _as_numpy_callable(sigma)
    if group is None:
        group = engine_group(label, **values)
    residuals = check_group(sigma, group, n=n, trials=trials, rng=rng)
    flags = []
    if not max(residuals) < tol:
        flags.append(f"unsound: sampled elements of G_{n} fail sigma(A x) = phi(A) sigma(x) (max residual {max(residuals):.3g})")
    # Claimed scalings one by one (including extreme ones) against the scalar identity.
    xs = _probe_points(rng)
    with np.errstate(all="ignore"):
        f0 = np.asarray(sigma(xs), dtype=float)
    claimed = list(group.sample_scalings(trials, rng))
    s1 = group.one_dimensional()
    extra = {"all": [1e-2, 0.1, 10.0, 100.0], "discrete": [float(s1.generator) ** k for k in (-3, -1, 1, 3)] if s1.generator is not None else [], "trivial": []}[s1.positive]
    claimed += extra
    if s1.negative is not None:
        claimed += [float(s1.negative) * v for v in ([1.0] + extra)]
    claimed_res = []
    for c in claimed:
        with np.errstate(all="ignore"):
            fa = np.asarray(sigma(c * xs), dtype=float)
        pc = float(group.phi_scalar(np.array([c]))[0])
        ok = np.isfinite(fa) & np.isfinite(f0)
        r = _relative(fa[ok] - pc * f0[ok], fa[ok], pc * f0[ok]) if ok.sum() > 0.5 * xs.size else math.inf
        claimed_res.append((float(c), r))
    bad = [c for c, r in claimed_res if not r < tol]
    if bad:
        flags.append(f"unsound: claimed scalings {[round(c, 6) for c in bad[:5]]} fail sigma(a x) = phi(a) sigma(x)")
    specificity = None
    if n >= 2 and group.kind == "monomial":
        Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        specificity = best_intertwiner_residual(sigma, Q, _inputs(n, 20 * n, rng))
    search = search_scalings(sigma, tol=tol, rng=rng, **(search_kw or {}))
    flags += list(compare_search(search, group))
    return CheckReport(label, tuple((k, str(v)) for k, v in values.items()), group, n, int(trials), residuals, float(tol),
                       tuple(claimed_res), specificity, search, tuple(flags))
