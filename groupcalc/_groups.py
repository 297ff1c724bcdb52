"""Numeric intertwiner groups: :class:`IntertwinerGroup` and :func:`group`.

An :class:`IntertwinerGroup` is the group :math:`G_{\\sigma_n}` of an activation as an object
one computes with, for every dimension ``n`` at once: membership, random elements, the
homomorphism :math:`\\phi_\\sigma`, inverses, products and the closest element to a matrix.
It is built from an engine result (:class:`~groupcalc.Case` or
:class:`~groupcalc.Scalings`) and uses numpy only.

The four kinds of group, following the class of the activation:

``"monomial"``
    :math:`\\sigma` non-constant and non-linear (Theorem E.14):
    :math:`G_{\\sigma_n} = \\{P D\\}` with ``P`` a permutation matrix and ``D`` diagonal with
    entries in :math:`S = G_{\\sigma_1}`; :math:`\\phi(P D) = P\\,\\mathrm{diag}(\\phi(d_i))`.
``"general_linear"``
    :math:`\\sigma(x) = c x`, :math:`c \\ne 0`: every invertible ``A``, :math:`\\phi(A) = A`.
``"affine"``
    :math:`\\sigma(x) = c x + d`, :math:`c, d \\ne 0`: :math:`\\sigma(A x) = c A x + d 1` equals
    :math:`B(c x + d 1)` for all ``x`` iff ``B = A`` and ``A 1 = 1``; so the group is the
    invertible matrices whose rows sum to 1, and :math:`\\phi(A) = A`.
``"constant"``
    :math:`\\sigma \\equiv d`: every invertible ``A`` intertwines, and :math:`\\phi` is not
    unique (any ``B`` with ``B d1 = d1`` works); we return the identity, the one choice that
    is valid for every ``d`` and is a homomorphism.

>>> import numpy as np, sympy
>>> from groupcalc import Scalings, a
>>> G = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a**3), label="cube")
>>> A = G.sample(3, np.random.default_rng(0))
>>> bool(G.contains(A)), G.dimension(3), G.components(3)
(True, 3, 48)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import sympy

from ._result import STATUSES, Case, GroupCalcError, Scalings, a

__all__ = ["IntertwinerGroup", "group"]

KINDS = ("monomial", "general_linear", "affine", "constant")

#: Standard deviation of log|d| for the log-normal scalings drawn by :meth:`IntertwinerGroup.sample`.
LOG_SCALE_STD = 1.0
#: Exponents k drawn uniformly from {-K..K} for powers g**k of a discrete generator.
DISCRETE_POWER = 2


def _sstr(expr) -> str:
    # sympy_integers=True prints 3/2 as S(3)/2, so the repr evaluates back to exact numbers.
    return "None" if expr is None else sympy.sstr(expr, sympy_integers=True)


def _as_matrix(A, name="A") -> np.ndarray:
    arr = np.asarray(A)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"Argument {name!r} must be a square matrix, not an array of shape {arr.shape}.")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"Argument {name!r} must hold real numbers, not dtype {arr.dtype}.")
    if arr.dtype.kind != "f":
        arr = arr.astype(float)
    return arr


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"Argument 'rng' must be a numpy Generator, an int seed or None, not {rng!r}.")


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Argument 'n' must be a positive integer, not {n!r}.")
    return int(n)


@functools.lru_cache(maxsize=256)
def _phi_function(phi: sympy.Expr):
    f = sympy.lambdify([a], phi, modules="numpy")

    def fn(values):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = np.asarray(f(values))
        return np.broadcast_to(out, np.shape(values)).astype(np.result_type(values, np.float32), copy=True)

    return fn


def _log_ratio_rational(g, h):
    """p/q with log g / log h = p/q, or None (not a rational, or undecidable)."""
    r = sympy.simplify(sympy.log(g) / sympy.log(h))
    if r.is_Rational:
        return r
    rf = float(r)
    guess = sympy.Rational(rf).limit_denominator(1000)
    # Accept a numerically exact small-denominator ratio: g**q == h**p to 30 digits.
    if abs(float(guess) - rf) < 1e-12 and abs(sympy.N(g ** guess.q - h ** guess.p, 30)) < 1e-20 * max(1, abs(sympy.N(g ** guess.q))):
        return guess
    return None


@dataclass(frozen=True)
class IntertwinerGroup:
    """The intertwiner group :math:`G_{\\sigma_n}` of an activation, for every ``n``.

    Parameters
    ----------
    kind : {"monomial", "general_linear", "affine", "constant"}
        The shape of the group (see the module docstring).
    scalings : Scalings or None
        :math:`S = G_{\\sigma_1}` and :math:`\\phi` on it; given exactly when ``kind`` is
        ``"monomial"``. Its phi must be an expression in :data:`groupcalc.a` only.
    label : str
        A name for people (the activation); it takes part in equality.
    status : {"proved", "verified-numerically", "unknown"}
        How the engine established the group (the status of its :class:`~groupcalc.Case`).
        ``"unknown"``: the group is only a sound lower bound (it contains these elements;
        the true group may be larger). Groups built by hand default to ``"proved"``
        (the caller vouches for them).

    Notes
    -----
    Equality and hashing are structural (same kind, same exact :class:`Scalings`, same
    label, same status); use :meth:`equals` to compare the groups themselves. ``repr`` evaluates back to
    an equal object in a namespace holding sympy's names, :data:`groupcalc.a`,
    :class:`~groupcalc.Scalings` and :class:`IntertwinerGroup`.
    """

    kind: str
    scalings: Scalings | None = None
    label: str = ""
    status: str = "proved"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Argument 'kind' must be one of {KINDS}, not {self.kind!r}.")
        if self.status not in STATUSES:
            raise ValueError(f"Argument 'status' must be one of {STATUSES}, not {self.status!r}.")
        if not isinstance(self.label, str):
            raise ValueError(f"Argument 'label' must be a string, not {self.label!r}.")
        if self.kind == "monomial":
            if not isinstance(self.scalings, Scalings):
                raise ValueError(f"Argument 'scalings' must be a Scalings for kind 'monomial', not {self.scalings!r}.")
            extra = {s for s in self.scalings.phi.free_symbols if s != a}
            for v in (self.scalings.generator, self.scalings.negative):
                if v is not None:
                    extra |= v.free_symbols
            if extra:
                raise ValueError(
                    f"Argument 'scalings' must be numeric apart from the symbol a; it has free symbols "
                    f"{sorted(str(s) for s in extra)} (substitute parameter values first)."
                )
            if self.scalings.positive == "discrete" and not bool(self.scalings.generator > 1):
                raise ValueError(f"Argument 'scalings' must have a generator > 1, not {self.scalings.generator}.")
            if self.scalings.negative is not None and not bool(self.scalings.negative < 0):
                raise ValueError(f"Argument 'scalings' must have a negative representative < 0, not {self.scalings.negative}.")
        elif self.scalings is not None:
            raise ValueError(f"Argument 'scalings' must be None for kind {self.kind!r}, not {self.scalings!r}.")

    # Construction ---------------------------------------------------------------
    @classmethod
    def from_scalings(cls, scalings: Scalings, label: str = "", status: str = "proved") -> "IntertwinerGroup":
        """The monomial group {P D : d_i in S} of a non-linear activation with G_sigma_1 = S."""
        return cls("monomial", scalings, label, status)

    @classmethod
    def from_case(cls, case: Case, label: str = "", params: dict | None = None) -> "IntertwinerGroup":
        """The group of one engine :class:`~groupcalc.Case`.

        ``params`` gives values for parameters that still appear in the case's scalings
        (for example ``degree`` in phi(a) = a**degree). The group carries the case's status;
        an unknown case whose class was not established gives the monomial group of the
        scalings it proved (at least the permutations), a lower bound.
        """
        if not isinstance(case, Case):
            raise ValueError(f"Argument 'case' must be a groupcalc Case, not {type(case).__name__}.")
        kind = {"nonlinear": "monomial", "linear": "general_linear", "affine": "affine", "constant": "constant",
                None: "monomial"}[case.cls]
        scalings = case.scalings if kind == "monomial" else None
        if scalings is not None and params:
            values = {k: sympy.nsimplify(v, rational=True) for k, v in params.items()}

            def sub(e):
                # Match parameters by name: the engine may give its symbols extra assumptions.
                if e is None:
                    return None
                subs = {s: values[s.name] for s in e.free_symbols if s.name in values}
                return sympy.simplify(e.subs(subs))

            scalings = Scalings(scalings.positive, sub(scalings.generator), sub(scalings.negative), sub(scalings.phi))
        if kind == "monomial" and scalings is None:
            raise GroupCalcError(f"the engine's nonlinear case for {label or 'this activation'} carries no scalings")
        return cls(kind, scalings, label, case.status)

    def __repr__(self) -> str:
        s = self.scalings
        sc = "None" if s is None else (
            f"Scalings(positive={s.positive!r}, generator={_sstr(s.generator)}, "
            f"negative={_sstr(s.negative)}, phi={_sstr(s.phi)})"
        )
        return f"IntertwinerGroup(kind={self.kind!r}, scalings={sc}, label={self.label!r}, status={self.status!r})"

    # Schema fields ----------------------------------------------------------------
    @property
    def positive_scalings(self) -> str | None:
        """"trivial", "all" or "discrete" for monomial groups, None otherwise."""
        return self.scalings.positive if self.scalings else None

    @property
    def negative_scalings(self) -> bool | None:
        return self.scalings.negative is not None if self.scalings else None

    @property
    def generator(self) -> float | None:
        return None if self.scalings is None or self.scalings.generator is None else float(self.scalings.generator)

    @property
    def negative(self) -> float | None:
        """The negative representative r of S (S ∩ (-oo, 0) = r · S+), or None."""
        return None if self.scalings is None or self.scalings.negative is None else float(self.scalings.negative)

    def one_dimensional(self) -> Scalings:
        """:math:`G_{\\sigma_1}` with :math:`\\phi` on it, for every kind.

        For ``general_linear`` this is R* with phi(a) = a, for ``affine`` the trivial group,
        for ``constant`` R* with phi(a) = 1 (the identity choice of phi).
        """
        if self.kind == "monomial":
            return self.scalings
        return {
            "general_linear": Scalings("all", None, -1, a),
            "affine": Scalings("trivial", None, None, a),
            "constant": Scalings("all", None, -1, sympy.Integer(1)),
        }[self.kind]

    def equals(self, other: "IntertwinerGroup") -> bool:
        """Whether two objects describe the same group and phi (labels ignored)."""
        if not isinstance(other, IntertwinerGroup) or self.kind != other.kind:
            return False
        if self.kind != "monomial":
            return True
        s, t = self.scalings, other.scalings
        if s.positive != t.positive or (s.negative is None) != (t.negative is None):
            return False
        if s.generator is not None and sympy.simplify(s.generator - t.generator) != 0:
            return False
        if s.negative is not None and sympy.simplify(s.negative - t.negative) != 0:
            return False
        diff = s.phi - t.phi
        if sympy.simplify(diff) == 0:
            return True
        # simplify cannot always see it (sign(a)*Abs(a)**3 vs a**3): compare phi exactly at
        # elements of S, which decide among the homomorphisms a^p, |a|^p, sign(a)|a|^p.
        return all(sympy.simplify(diff.subs(a, pt)) == 0 for pt in _exact_points(s))

    # Scalars ----------------------------------------------------------------------
    def phi_scalar(self, values) -> np.ndarray:
        """phi applied elementwise to scalings (elements of S); dtype follows the input."""
        vals = np.asarray(values)
        if vals.dtype.kind != "f":
            vals = vals.astype(float)
        if self.kind == "monomial":
            return _phi_function(self.scalings.phi)(vals)
        return (np.ones_like(vals) if self.kind == "constant" else vals.copy())

    def scalar_in_s(self, values, tol: float = 1e-8) -> np.ndarray:
        """Elementwise: is each value in :math:`S = G_{\\sigma_1}` (relative tolerance ``tol``)?"""
        v = np.asarray(values, dtype=float)
        s = self.one_dimensional()
        out = np.zeros(v.shape, dtype=bool)
        pos = v > 0
        out[pos] = self._in_positive(v[pos], s, tol)
        if s.negative is not None:
            neg = v < 0
            out[neg] = self._in_positive(v[neg] / float(s.negative), s, tol)
        return out & np.isfinite(v)

    @staticmethod
    def _in_positive(v, s: Scalings, tol):
        if s.positive == "all":
            return v > 0
        if s.positive == "trivial":
            return np.abs(v - 1) <= tol * np.maximum(1, np.abs(v))
        k = np.log(v) / math.log(float(s.generator))
        return np.abs(v - float(s.generator) ** np.round(k)) <= tol * np.abs(v)

    def sample_scalings(self, n: int, rng=None) -> np.ndarray:
        """``n`` i.i.d. elements of S.

        The positive part is log-normal (``log d ~ N(0, LOG_SCALE_STD**2)``) when
        S+ = (0, oo), ``g**k`` with k uniform in ``{-DISCRETE_POWER..DISCRETE_POWER}``
        when S+ = g^Z, and 1 when trivial; when S holds negative numbers, each value is
        multiplied by the negative representative with probability 1/2.
        """
        n = _check_n(n) if n != 0 else 0
        rng = _rng(rng)
        s = self.one_dimensional()
        if s.positive == "all":
            out = np.exp(rng.normal(0.0, LOG_SCALE_STD, n))
        elif s.positive == "discrete":
            out = float(s.generator) ** rng.integers(-DISCRETE_POWER, DISCRETE_POWER + 1, n).astype(float)
        else:
            out = np.ones(n)
        if s.negative is not None:
            out = np.where(rng.random(n) < 0.5, out * float(s.negative), out)
        return out

    def project_scalings(self, values, min_scale: float = 1e-6) -> np.ndarray:
        """The nearest element of S to each real number.

        Where the infimum distance is not attained (a non-positive number when S+ = (0, oo)
        or g^Z and S has no negative number on that side), the value is clipped to the
        smallest element of magnitude at least ``min_scale``.
        """
        v = np.asarray(values, dtype=float)
        s = self.one_dimensional()
        best = self._project_side(v, 1.0, s, min_scale)
        if s.negative is not None:
            r = float(s.negative)
            # negative side: elements r * S+; nearest r*t to v is r * (nearest t to v / r).
            cand = r * self._project_side(v / r, 1.0, s, min_scale)
            best = np.where(np.abs(cand - v) < np.abs(best - v), cand, best)
        return best

    @staticmethod
    def _project_side(v, _sign, s: Scalings, min_scale):
        if s.positive == "trivial":
            return np.ones_like(v)
        if s.positive == "all":
            return np.maximum(v, min_scale)
        g = float(s.generator)
        k = np.floor(np.log(np.maximum(v, min_scale)) / math.log(g))
        lo, hi = g**k, g ** (k + 1)
        lo = np.where(lo < min_scale * (1 - 1e-12), hi, lo)
        return np.where(np.abs(v - lo) <= np.abs(hi - v), lo, hi)

    # Matrices -----------------------------------------------------------------------
    def _monomial_parts(self, A: np.ndarray):
        """(rows, values): column j of A is values[j] * e_{rows[j]}, or a ValueError."""
        rows = np.argmax(np.abs(A), axis=0)
        if len(set(rows.tolist())) != A.shape[0]:
            raise ValueError("Argument 'A' must be a monomial matrix (one non-zero per row and column).")
        vals = A[rows, np.arange(A.shape[1])]
        return rows, vals

    def contains(self, A, tol: float = 1e-8) -> bool:
        """Whether the matrix ``A`` lies in the group, up to relative tolerance ``tol``.

        Monomial groups: every column has one entry whose size dominates, the other entries
        are at most ``tol`` times it, the pivots sit in distinct rows, and each pivot is in S
        (relative ``tol``). Other kinds: ``A`` has full numerical rank (smallest singular value
        above ``n * eps`` times the largest, as in ``numpy.linalg.matrix_rank``), and for
        ``affine`` its row sums are 1 within ``tol`` (relative to ``max(1, max|A|)``).
        """
        A = _as_matrix(A)
        if not np.all(np.isfinite(A)):
            return False
        n = A.shape[0]
        if self.kind == "monomial":
            rows = np.argmax(np.abs(A), axis=0)
            if len(set(rows.tolist())) != n:
                return False
            piv = A[rows, np.arange(n)]
            if np.any(piv == 0):
                return False
            off = A.copy()
            off[rows, np.arange(n)] = 0
            if np.any(np.abs(off) > tol * np.abs(piv)[None, :]):
                return False
            return bool(np.all(self.scalar_in_s(piv, tol)))
        sv = np.linalg.svd(A, compute_uv=False)
        # Full numerical rank, numpy.linalg.matrix_rank's criterion.
        if not sv[-1] > n * np.finfo(A.dtype).eps * sv[0]:
            return False
        if self.kind == "affine":
            return bool(np.max(np.abs(A.sum(axis=1) - 1)) <= tol * max(1.0, float(np.max(np.abs(A)))))
        return True

    def sample(self, n: int, rng=None) -> np.ndarray:
        """A random element of :math:`G_{\\sigma_n}` as an (n, n) float64 array.

        Monomial groups: ``P D`` with ``P`` a uniform random permutation and the diagonal of
        ``D`` drawn by :meth:`sample_scalings`. ``general_linear`` and ``constant``: a
        matrix of i.i.d. N(0, 1/n) entries (redrawn in the rare case its condition number
        exceeds 1e6). ``affine``: such a matrix projected onto row sums 1 (each row r moves to
        r + (1 - r·1)/n · 1).
        """
        n = _check_n(n)
        rng = _rng(rng)
        if self.kind == "monomial":
            perm = rng.permutation(n)
            A = np.zeros((n, n))
            A[perm, np.arange(n)] = self.sample_scalings(n, rng)
            return A
        for _ in range(100):
            M = rng.normal(0.0, 1.0 / math.sqrt(n), (n, n))
            if self.kind == "affine":
                M = M + (1.0 - M.sum(axis=1, keepdims=True)) / n
            if np.linalg.cond(M) < 1e6:
                return M
        raise GroupCalcError("could not draw a well-conditioned group element in 100 attempts")  # pragma: no cover

    def phi(self, A) -> np.ndarray:
        """:math:`\\phi_\\sigma(A)` for ``A`` in the group; dtype follows ``A``.

        Monomial: ``P diag(phi(d_i))`` read off the pattern of ``A`` (a ValueError if ``A``
        is not monomial). general_linear and affine: ``A``. constant: the identity.
        """
        A = _as_matrix(A)
        if self.kind == "monomial":
            rows, vals = self._monomial_parts(A)
            out = np.zeros_like(A)
            out[rows, np.arange(A.shape[1])] = self.phi_scalar(vals)
            return out
        if self.kind == "constant":
            return np.eye(A.shape[0], dtype=A.dtype)
        return A.copy()

    def inverse(self, A) -> np.ndarray:
        """The inverse of a group element (exact pattern transpose for monomial groups)."""
        A = _as_matrix(A)
        if self.kind == "monomial":
            rows, vals = self._monomial_parts(A)
            out = np.zeros_like(A)
            out[np.arange(A.shape[1]), rows] = 1.0 / vals
            return out
        return np.linalg.inv(A)

    def compose(self, A, B) -> np.ndarray:
        """The product ``A @ B`` of two group elements."""
        A, B = _as_matrix(A), _as_matrix(B, "B")
        if A.shape != B.shape:
            raise ValueError(f"Arguments 'A' and 'B' must have the same shape, not {A.shape} and {B.shape}.")
        return A @ B

    def identity(self, n: int) -> np.ndarray:
        return np.eye(_check_n(n))

    def nearest(self, M, min_scale: float = 1e-6) -> np.ndarray:
        """The group element closest to ``M`` in Frobenius norm.

        Monomial groups: putting value ``s`` at entry (i, j) costs
        ``||M[:, j]||^2 - M_ij^2 + (s - M_ij)^2``, minimised over ``s in S`` by the nearest
        element of S to ``M_ij`` (:meth:`project_scalings`). A linear assignment
        (``scipy.optimize.linear_sum_assignment``) over the cost
        ``(proj(M_ij) - M_ij)^2 - M_ij^2`` then picks the permutation, so the result is an
        exact Frobenius minimiser over the group, except where the infimum is not attained
        (S+ = (0, oo) or g^Z, a non-positive M_ij and no negative scalings): there the scale is
        the smallest element of S+ at least ``min_scale * max|M|``. general_linear / constant: ``M`` with its singular values raised to at least
        ``min_scale`` times the largest. affine: the orthogonal projection onto row sums 1.
        """
        M = _as_matrix(M, "M")
        if not np.all(np.isfinite(M)):
            raise ValueError("Argument 'M' must be finite.")
        n = M.shape[0]
        if self.kind == "monomial":
            from scipy.optimize import linear_sum_assignment

            Mf = M.astype(float)
            scale = max(float(np.max(np.abs(Mf))), 1e-300)
            proj = self.project_scalings(Mf, min_scale=min_scale * scale)
            cost = (proj - Mf) ** 2 - Mf**2
            rows, cols = linear_sum_assignment(cost)
            out = np.zeros_like(M)
            out[rows, cols] = proj[rows, cols]
            return out
        if self.kind == "affine":
            return M + (1.0 - M.sum(axis=1, keepdims=True)) / n
        U, sv, Vt = np.linalg.svd(M.astype(float))
        sv = np.maximum(sv, min_scale * max(sv[0], 1e-300))
        return ((U * sv) @ Vt).astype(M.dtype)

    # Topology -----------------------------------------------------------------------
    def dimension(self, n: int) -> int:
        """Dimension of the group as a Lie group (of its continuous part)."""
        n = _check_n(n)
        if self.kind == "monomial":
            return n if self.scalings.positive == "all" else 0
        if self.kind == "affine":
            return n * (n - 1)
        return n * n

    def components(self, n: int):
        """Number of connected components; ``math.inf`` when S+ is discrete (g^Z is infinite).

        Monomial: ``n! * (2 if S has negatives else 1)**n`` (each column picks a row and a
        sign). GL_n (general_linear, constant): 2. Affine: {A : A1 = 1} is isomorphic to the
        affine group of R^(n-1), with 2 components for n >= 2 and 1 for n = 1.
        """
        n = _check_n(n)
        if self.kind == "monomial":
            if self.scalings.positive == "discrete":
                return math.inf
            return math.factorial(n) * (2 if self.scalings.negative is not None else 1) ** n
        if self.kind == "affine":
            return 1 if n == 1 else 2
        return 2

    def describe(self) -> str:
        """A one-paragraph description for people; a group whose status is not "proved" says so
        first (an "unknown" one is only a sound lower bound)."""
        head = f"{self.label}: " if self.label else ""
        if self.status == "unknown":
            head += "[unknown: the engine could not finish; G_n contains the following] "
        elif self.status != "proved":
            head += f"[{self.status}] "
        if self.kind == "monomial":
            s = self.scalings
            comps = "infinitely many components" if s.positive == "discrete" else (
                "n! 2^n components" if s.negative is not None else "n! components")
            dim = "dimension n" if s.positive == "all" else "dimension 0"
            return (f"{head}G_n = {{P D : P a permutation, D diagonal with entries in S = {s.describe()}}}; "
                    f"phi(P D) = P diag(phi(d_i)) with phi(a) = {s.phi}; {dim}, {comps}.")
        return head + {
            "general_linear": "G_n = GL_n(R) (sigma is linear); phi(A) = A; dimension n^2, 2 components.",
            "affine": "G_n = {A in GL_n(R) : A 1 = 1} (rows sum to 1; sigma is affine); phi(A) = A; "
                      "dimension n(n-1), 2 components for n >= 2.",
            "constant": "G_n = GL_n(R) (sigma is constant); phi is not unique, the identity is used; "
                        "dimension n^2, 2 components.",
        }[self.kind]

    def intersect(self, other: "IntertwinerGroup") -> "IntertwinerGroup":
        """The group whose scalings are S ∩ S' (an axis feeding several activations).

        phi is this group's. Only monomial groups (or ``general_linear``/``constant``, whose
        one-dimensional group is R*) are intersected; for ``affine`` S = {1}.
        """
        if not isinstance(other, IntertwinerGroup):
            raise ValueError(f"Argument 'other' must be an IntertwinerGroup, not {type(other).__name__}.")
        if self.kind != "monomial" and other.kind != "monomial":
            if self.kind == other.kind:
                return self
        s, t = self.one_dimensional(), other.one_dimensional()
        label = " & ".join(x for x in (self.label, other.label) if x)
        pos, gen = _intersect_positive(s, t)
        neg = _intersect_negative(s, t, pos, gen)
        worst = max((self.status, other.status), key=STATUSES.index)
        return IntertwinerGroup("monomial", Scalings(pos, gen, neg, s.phi), label, worst)


def _exact_points(s: Scalings) -> list:
    """A few exact elements of S (sympy numbers)."""
    if s.positive == "all":
        pos = [sympy.Integer(2), sympy.Rational(3, 7), sympy.Integer(5)]
    elif s.positive == "discrete":
        pos = [s.generator, s.generator**-2, s.generator**3]
    else:
        pos = [sympy.Integer(1)]
    if s.negative is None:
        return pos
    return pos + [s.negative * p for p in pos]


def _intersect_positive(s: Scalings, t: Scalings):
    kinds = {s.positive, t.positive}
    if "trivial" in kinds:
        return "trivial", None
    if kinds == {"all"}:
        return "all", None
    if s.positive == "all":
        return "discrete", t.generator
    if t.positive == "all":
        return "discrete", s.generator
    r = _log_ratio_rational(s.generator, t.generator)
    if r is None:
        return "trivial", None
    # g^m ∈ h^Z iff q | m where log g / log h = p/q.
    return "discrete", sympy.simplify(s.generator ** r.q)


def _intersect_negative(s: Scalings, t: Scalings, pos, gen):
    if s.negative is None or t.negative is None:
        return None
    if s.negative == -1 and t.negative == -1:
        return sympy.Integer(-1)
    g_s = IntertwinerGroup("monomial", s)
    g_t = IntertwinerGroup("monomial", t)
    # Look for a common negative element among r * g^k for small k (both sides are r S+).
    base = s.generator if s.generator is not None else sympy.Integer(1)
    cands = sorted({sympy.simplify(s.negative * base**k) for k in range(-12, 13)}, key=lambda v: abs(float(v) + 1))
    common = [c for c in cands if g_s.scalar_in_s([float(c)])[0] and g_t.scalar_in_s([float(c)])[0]]
    if not common:
        return None
    if pos == "trivial":
        return sympy.Integer(-1) if any(c == -1 for c in common) else None
    # Normalise: the negative element of the intersection closest to -1 from below.
    c = common[0]
    if pos == "discrete":
        gf = float(gen)
        k = math.floor(math.log(-float(c)) / math.log(gf))
        c = sympy.simplify(c / gen**k)
    return c if float(c) <= -1 else sympy.Integer(-1)


def group(name_or_formula: str, timeout: float | None = None, **params) -> IntertwinerGroup:
    """The intertwiner group of a catalogue activation or a formula, from the engine.

    Parameter values not given take the catalogue defaults. ``timeout`` is the engine's
    wall-clock guard (default :data:`groupcalc._derive.DEFAULT_TIMEOUT`); the answer itself
    is limited by counted work, so it does not depend on the machine's load. The group's
    ``status`` is the engine's: check it (``"unknown"`` means a lower bound only).

    Results that are proved or verified numerically are cached (they are immutable values);
    unknown results are never cached, so a later call derives again. The cache key includes
    the activation's formula, so re-registering a name with a new formula derives again.

    >>> group("relu").describe()  # doctest: +ELLIPSIS
    'relu: G_n = {P D : P a permutation, D diagonal with entries in S = (0, oo)}; ...'
    """
    if not isinstance(name_or_formula, str):
        raise ValueError(f"Argument 'name_or_formula' must be a string, not {type(name_or_formula).__name__}.")
    import activations

    values = dict(params)
    try:
        act = activations.get(name_or_formula)
    except KeyError:
        act = None
    if act is not None:
        values = act.bind(**params)
    key = tuple(sorted((k, sympy.nsimplify(v, rational=True)) for k, v in values.items()))
    label = name_or_formula.strip()
    cache_key = (label, None if act is None else act.expr, key)
    hit = _CACHE.get(cache_key)
    if hit is not None:
        return hit
    from ._derive import DEFAULT_TIMEOUT, derive  # lazily: the engine is heavy

    values = dict(key)
    deriv = derive(label, params=values or None, timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
    case = deriv.cases[0] if len(deriv.cases) == 1 else deriv.case(**values)
    result = IntertwinerGroup.from_case(case, label=label, params=values)
    if result.status != "unknown":  # an unknown answer may be settled by a later call
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[cache_key] = result
    return result


#: Most groups kept by :func:`group` (oldest dropped first).
CACHE_SIZE = 512
_CACHE: dict = {}
