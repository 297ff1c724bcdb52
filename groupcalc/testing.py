"""Hypothesis strategies and checkers for intertwiner groups, published for users.

Test your own activation the way groupcalc tests its catalogue::

    from hypothesis import given
    import groupcalc, groupcalc.testing as gt

    G = groupcalc.group("leaky_relu", negative_slope=0.2)

    @given(A=gt.group_elements(G, 4), x=gt.inputs(4))
    def test_my_layer(A, x):
        gt.assert_intertwines(my_sigma, A, G.phi(A), x=x)

Strategies: :func:`catalogue_activations`, :func:`catalogue_formulas` (random formulas built
from catalogue functions), :func:`scalings`, :func:`group_elements`, :func:`inputs`.
Checkers raise ``AssertionError`` with the residual in the message:
:func:`assert_intertwines`, :func:`assert_not_intertwines`, :func:`assert_group_laws`,
:func:`assert_lemma_3_1`, :func:`assert_network_symmetry`.
Needs ``hypothesis`` (the ``test`` extra) for the strategies only.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import sympy
from sympy.printing.str import StrPrinter

import activations

from ._check import _relative_rows, best_intertwiner_residual, intertwining_residual
from ._groups import IntertwinerGroup, _rng

__all__ = [
    "catalogue_activations", "catalogue_formulas", "random_formula", "formula_text", "scalings", "group_elements",
    "inputs", "default_rtol", "assert_intertwines", "assert_not_intertwines", "assert_group_laws",
    "assert_lemma_3_1", "assert_network_symmetry", "mlp_forward", "transform_weights", "outside_element",
    "random_orthogonal",
]


def default_rtol(dtype) -> float:
    """Relative tolerance for residuals computed in ``dtype`` (1e-3 for float32, 1e-8 for float64)."""
    dt = np.dtype(dtype)
    if dt == np.float32:
        return 1e-3
    if dt == np.float64:
        return 1e-8
    raise ValueError(f"Argument 'dtype' must be float32 or float64, not {dt}.")


# Formulas ----------------------------------------------------------------------------
class _FormulaPrinter(StrPrinter):
    """Prints sympy expressions in the syntax :func:`activations.parse_formula` reads."""

    def _print_Piecewise(self, expr):
        *pairs, (last, cond) = expr.args
        out = self._print(last) if cond == sympy.true else f"where({self._print(cond)}, {self._print(last)}, 0)"
        for e, c in reversed(pairs):
            out = f"where({self._print(c)}, {self._print(e)}, {out})"
        return out

    def _print_And(self, expr):
        return "(" + " and ".join(f"({self._print(a)})" for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(f"({self._print(a)})" for a in expr.args) + ")"

    def _print_Relational(self, expr):
        if expr.rel_op in ("==", "!="):  # the parser reads Eq(a, b) and Ne(a, b)
            return f"{'Eq' if expr.rel_op == '==' else 'Ne'}({self._print(expr.lhs)}, {self._print(expr.rhs)})"
        if expr.rel_op not in ("<", "<=", ">", ">="):
            raise ValueError(f"cannot write the condition {expr} as formula text")
        return f"({self._print(expr.lhs)}) {expr.rel_op} ({self._print(expr.rhs)})"

    def _print_Float(self, expr):
        return self._print(sympy.nsimplify(expr, rational=True))


def formula_text(expr: sympy.Expr) -> str:
    """Formula text that :func:`activations.parse_formula` reads back to ``expr``."""
    return _FormulaPrinter().doprint(expr)


_COEFFICIENTS = tuple(sympy.Rational(c) for c in ("1/2", "2", "3", "-1", "1/3", "3/2", "-2", "5/4", "-1/2", "7/10"))


def _parses(text: str) -> bool:
    try:
        activations.parse_formula(text)
    except activations.FormulaError:
        return False
    return True


def _leaves():
    return _leaves_for(activations.names())


@functools.lru_cache(maxsize=8)
def _leaves_for(_names):
    """(name, formula) of the catalogue entries at default parameters whose text the parser reads.

    The parser reads every catalogue formula (selu's long exact constants included, since
    its size limit applies to the whole formula, not to a literal), so every entry is a leaf;
    the check stays for user-registered entries.
    """
    out = []
    for act in activations.catalogue():
        expr = act.expr.subs({p.symbol: p.default for p in act.parameters})
        if _parses(formula_text(expr)):
            out.append((act.name, expr))
    return tuple(out)


def _build_formula(choose, depth: int) -> sympy.Expr:
    """A random formula from catalogue functions; ``choose(options)`` returns one option."""
    leaves = _leaves()
    if depth <= 0:
        return choose(leaves)[1]
    op = choose(("leaf", "sum", "product", "compose", "scale_input", "scale_output"))
    if op == "leaf":
        return choose(leaves)[1]
    if op == "sum":
        return choose(_COEFFICIENTS) * _build_formula(choose, depth - 1) + choose(_COEFFICIENTS) * _build_formula(choose, depth - 1)
    if op == "product":
        return _build_formula(choose, depth - 1) * choose(leaves)[1]
    if op == "compose":
        inner = _build_formula(choose, depth - 1)
        return choose(leaves)[1].subs(activations.x, inner)
    if op == "scale_input":
        return _build_formula(choose, depth - 1).subs(activations.x, choose(_COEFFICIENTS) * activations.x)
    return choose(_COEFFICIENTS) * _build_formula(choose, depth - 1) + choose((0, 0, 1, sympy.Rational(1, 2)))


def random_formula(rng: random.Random | int, depth: int = 2) -> str:
    """Formula text (see :func:`formula_text`) of a random combination of catalogue functions.

    Sums and products with rational coefficients, compositions and input scalings, up to
    ``depth`` levels; formulas too large for the parser are redrawn.
    """
    r = rng if isinstance(rng, random.Random) else random.Random(rng)
    for _ in range(100):
        text = formula_text(_build_formula(r.choice, depth))
        if _parses(text):
            return text
    raise RuntimeError("could not draw a parseable formula in 100 attempts")  # pragma: no cover


def _st():
    try:
        import hypothesis.strategies as st
    except ImportError:  # pragma: no cover
        raise ImportError("groupcalc.testing strategies need hypothesis: pip install 'groupcalc[test]'") from None
    return st


def catalogue_activations():
    """Strategy: catalogue :class:`activations.Activation` objects."""
    return _st().sampled_from(activations.catalogue())


def catalogue_formulas(depth: int = 2):
    """Strategy: formula text built from catalogue functions (see :func:`random_formula`)."""
    st = _st()

    @st.composite
    def build(draw):
        for _ in range(20):
            text = formula_text(_build_formula(lambda opts: draw(st.sampled_from(tuple(opts))), depth))
            if _parses(text):
                return text
        return "relu(x)"

    return build()


def scalings(group: IntertwinerGroup):
    """Strategy: elements of S = G_sigma_1 (log|a| in [-3, 3] when S+ = (0, oo), g**k with |k| <= 3 when discrete)."""
    st = _st()
    s = group.one_dimensional()
    if s.positive == "all":
        pos = st.floats(-3.0, 3.0).map(math.exp)
    elif s.positive == "discrete":
        g = float(s.generator)
        pos = st.integers(-3, 3).map(lambda k: g**k)
    else:
        pos = st.just(1.0)
    if s.negative is None:
        return pos
    r = float(s.negative)
    return st.tuples(pos, st.booleans()).map(lambda t: t[0] * r if t[1] else t[0])


def group_elements(group: IntertwinerGroup, n: int):
    """Strategy: elements of G_n as (n, n) float64 arrays.

    Monomial groups: a permutation and n scalings from :func:`scalings`; other kinds:
    ``group.sample`` with a drawn seed.
    """
    st = _st()
    if group.kind != "monomial":
        return st.integers(0, 2**32 - 1).map(lambda seed: group.sample(n, np.random.default_rng(seed)))

    def make(args):
        perm, vals = args
        A = np.zeros((n, n))
        A[list(perm), np.arange(n)] = vals
        return A

    return st.tuples(st.permutations(range(n)), st.lists(scalings(group), min_size=n, max_size=n)).map(make)


def inputs(n: int, m: int = 16, dtype=np.float64, bound: float = 4.0):
    """Strategy: (n, m) arrays of m input vectors with entries in [-bound, bound]."""
    st = _st()
    from hypothesis.extra.numpy import arrays

    return arrays(np.dtype(dtype), (n, m), elements=st.floats(-bound, bound, width=np.dtype(dtype).itemsize * 8))


# Matrices used as counterexamples -------------------------------------------------------
def random_orthogonal(n: int, rng=None) -> np.ndarray:
    """A Haar-random orthogonal matrix (Q of a QR decomposition, signs fixed)."""
    rng = _rng(rng)
    Q, R = np.linalg.qr(rng.normal(size=(n, n)))
    return Q * np.sign(np.diag(R))[None, :]


def outside_element(group: IntertwinerGroup, n: int, rng=None) -> np.ndarray | None:
    """An element of a strictly larger subgroup of GL_n that is not in ``group``.

    Monomial groups: a P D whose scalings leave S in one column (a positive scaling outside
    S+ when S+ != (0, oo); otherwise a negative one when S has none; otherwise — S = R* —
    a shear, so the matrix is not monomial). Affine: an element of GL_n with row sums != 1.
    None for GL_n itself (general_linear, constant): there is no larger group.
    """
    rng = _rng(rng)
    if group.kind in ("general_linear", "constant"):
        return None
    if group.kind == "affine":
        A = group.sample(n, rng)
        return A * 2.0 if n > 1 else np.array([[2.0]])
    A = group.sample(n, rng)
    j = int(rng.integers(n))
    i = int(np.argmax(np.abs(A[:, j])))
    s = group.one_dimensional()
    if s.positive != "all":
        while True:
            v = float(np.exp(rng.uniform(-1.5, 1.5)))
            if not group.scalar_in_s([v], tol=1e-3)[0]:
                break
        A[i, j] = v
        return A
    if s.negative is None:
        A[i, j] = -abs(A[i, j])
        return A
    if n == 1:
        return None
    shear = np.eye(n)
    shear[0, 1] = 1.0
    return A @ shear


# Checkers ------------------------------------------------------------------------------------
def _default_inputs(n, m, rng):
    """m columns: half N(0, 2^2) (the bends near 0), half N(0, 10^2) (saturation, e.g. relu6 at 6)."""
    rng = _rng(rng)
    half = m // 2
    return np.concatenate([rng.normal(0.0, 2.0, (n, m - half)), rng.normal(0.0, 10.0, (n, half))], axis=1)


def assert_intertwines(sigma, A, phi_A=None, *, x=None, rtol: float | None = None, rng=None) -> float:
    """Assert sigma(A x) = phi_A sigma(x) for the columns of ``x`` (random when None).

    With ``phi_A`` None the best linear B (least squares) stands in for it. The residual is
    the largest over output coordinates of ``max|lhs_i - rhs_i| / max(|lhs_i|, |rhs_i|)``
    (see :func:`groupcalc._check.intertwining_residual`); ``rtol`` defaults to :func:`default_rtol` of
    ``A``'s dtype. Returns the residual.
    """
    A = np.asarray(A)
    dtype = A.dtype if A.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    rtol = default_rtol(dtype) if rtol is None else rtol
    n = A.shape[0]
    if x is None:
        x = _default_inputs(n, 8 * n + 16, rng).astype(dtype)
    r = best_intertwiner_residual(sigma, A, x) if phi_A is None else intertwining_residual(sigma, A, np.asarray(phi_A, dtype=dtype), x)
    if not r <= rtol:
        raise AssertionError(f"sigma(A x) != phi(A) sigma(x): relative residual {r:.3g} > {rtol:g} for A =\n{A}")
    return r


def assert_not_intertwines(sigma, A, *, x=None, min_residual: float = 1e-3, rng=None) -> float:
    """Assert that no linear B gives sigma(A x) = B sigma(x) (least-squares residual above ``min_residual``)."""
    A = np.asarray(A, dtype=float)
    n = A.shape[0]
    if x is None:
        x = _default_inputs(n, 20 * n + 20, rng)
    r = best_intertwiner_residual(sigma, A, x)
    if not r > min_residual:
        raise AssertionError(f"A intertwines sigma (best linear fit leaves residual {r:.3g} <= {min_residual:g}) for A =\n{A}")
    return r


def assert_group_laws(group: IntertwinerGroup, A, B, *, rtol: float | None = None) -> None:
    """Closure, inverses, identity and the homomorphism property of phi on two elements."""
    A, B = np.asarray(A), np.asarray(B)
    dtype = A.dtype if A.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    rtol = default_rtol(dtype) if rtol is None else rtol
    n = A.shape[0]
    for name, M in (("A", A), ("B", B)):
        if not group.contains(M, tol=rtol):
            raise AssertionError(f"{name} is not in the group:\n{M}")
    AB = group.compose(A, B)
    if not group.contains(AB, tol=10 * rtol):
        raise AssertionError(f"the group is not closed: A B =\n{AB}")
    Ai = group.inverse(A)
    if not group.contains(Ai, tol=10 * rtol):
        raise AssertionError(f"A^-1 is not in the group:\n{Ai}")
    eye = np.eye(n, dtype=dtype)
    if not np.allclose(group.compose(A, Ai), eye, rtol=0, atol=10 * rtol * max(1, np.abs(A).max() * np.abs(Ai).max())):
        raise AssertionError("inverse(A) is not a two-sided inverse")
    if not group.contains(eye):
        raise AssertionError("the identity is not in the group")
    pA, pB, pAB = group.phi(A), group.phi(B), group.phi(AB)
    scale = max(1.0, float(np.abs(pA).max() * np.abs(pB).max()))
    if not np.allclose(pAB, pA @ pB, rtol=10 * rtol, atol=10 * rtol * scale):
        raise AssertionError(f"phi is not a homomorphism: phi(AB) =\n{pAB}\nphi(A) phi(B) =\n{pA @ pB}")
    if not np.allclose(group.phi(eye), eye, atol=rtol):
        raise AssertionError("phi(I) != I")
    pAi = group.phi(Ai)
    if not np.allclose(pAi @ pA, eye, atol=10 * rtol * scale):
        raise AssertionError("phi(A^-1) != phi(A)^-1")


def assert_lemma_3_1(sigma, group: IntertwinerGroup, A, *, rtol: float | None = None, max_cond: float = 1e6) -> bool:
    """Assert phi(A) = sigma(A) sigma(I)^-1 (Lemma 3.1) when sigma(I_n) is invertible.

    Returns False (and asserts nothing) when sigma(I_n) has condition number above
    ``max_cond``: Lemma 3.1 does not apply there.
    """
    A = np.asarray(A)
    dtype = A.dtype if A.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    rtol = default_rtol(dtype) if rtol is None else rtol
    eye = np.eye(A.shape[0], dtype=dtype)
    with np.errstate(all="ignore"):
        sI = np.asarray(sigma(eye)).astype(np.float64)
        sA = np.asarray(sigma(A)).astype(np.float64)
    if not np.all(np.isfinite(sI)) or np.linalg.cond(sI) > max_cond:
        return False
    lemma = sA @ np.linalg.inv(sI)
    ours = group.phi(A).astype(np.float64)
    cond = np.linalg.cond(sI)
    scale = max(1.0, float(np.abs(lemma).max()))
    if not np.allclose(ours, lemma, rtol=0, atol=10 * rtol * cond * scale):
        raise AssertionError(f"phi(A) != sigma(A) sigma(I)^-1 (Lemma 3.1):\nphi(A) =\n{ours}\nsigma(A) sigma(I)^-1 =\n{lemma}")
    return True


# Proposition 3.4 --------------------------------------------------------------------------
def mlp_forward(sigma, weights, biases, x):
    """Hidden states f_{<=m}(x) for m = 1..k-1 (post-activation) and the output f(x).

    ``weights[i]`` maps layer i to layer i+1; ``x`` is (n_0, m). Returns a list: the k-1
    hidden states, then the output.
    """
    h = x
    out = []
    for W, b in zip(weights[:-1], biases[:-1]):
        h = sigma(W @ h + b[:, None])
        out.append(h)
    out.append(weights[-1] @ h + biases[-1][:, None])
    return out


def transform_weights(weights, biases, elements, group: IntertwinerGroup):
    """W' of Proposition 3.4: (A_1 W_1, A_1 b_1, A_2 W_2 phi(A_1^-1), A_2 b_2, ..., W_k phi(A_{k-1}^-1), b_k)."""
    if len(elements) != len(weights) - 1:
        raise ValueError(f"Argument 'elements' must hold {len(weights) - 1} matrices (one per hidden layer), not {len(elements)}.")
    W2, b2 = [], []
    prev = None
    for i, (W, b) in enumerate(zip(weights, biases)):
        A = elements[i] if i < len(elements) else None
        Wn = W if prev is None else W @ group.phi(group.inverse(prev)).astype(W.dtype)
        if A is not None:
            A = np.asarray(A, dtype=W.dtype)
            Wn, bn = A @ Wn, A @ b
        else:
            bn = b
        W2.append(Wn)
        b2.append(bn)
        prev = A
    return W2, b2


def assert_network_symmetry(sigma, group: IntertwinerGroup, widths, *, rng=None, dtype=np.float64, m: int = 32,
                            rtol: float | None = None) -> None:
    """Proposition 3.4 on a random MLP: eq. (3.5) layer by layer, and f(x, W') = f(x, W).

    Random weights N(0, 1/(4 fan_in)) (small, so exp-like activations stay finite) and biases N(0, 0.1) for an MLP with layer ``widths``
    (n_0, n_1, ..., n_k) and sigma on every hidden layer; A_i sampled from G_{n_i}.
    """
    rng = _rng(rng)
    rtol = default_rtol(dtype) if rtol is None else rtol
    widths = list(widths)
    weights = [rng.normal(0, 0.5 / math.sqrt(widths[i]), (widths[i + 1], widths[i])).astype(dtype) for i in range(len(widths) - 1)]
    biases = [rng.normal(0, 0.1, widths[i + 1]).astype(dtype) for i in range(len(widths) - 1)]
    elements = [group.sample(w, rng) for w in widths[1:-1]]
    W2, b2 = transform_weights(weights, biases, elements, group)
    x = rng.normal(0, 1, (widths[0], m)).astype(dtype)
    with np.errstate(all="ignore"):
        before = mlp_forward(sigma, weights, biases, x)
        after = mlp_forward(sigma, W2, b2, x)
    for i, (h, h2) in enumerate(zip(before[:-1], after[:-1])):
        expect = group.phi(elements[i]).astype(dtype) @ h
        err = _relative_rows(h2 - expect, h2, expect)
        if not err <= rtol:
            raise AssertionError(f"eq. (3.5) fails at hidden layer {i + 1}: f_<=m(x, W') vs phi(A_m) f_<=m(x, W), relative residual {err:.3g}")
    y, y2 = before[-1], after[-1]
    err = _relative_rows(y - y2, y, y2)
    if not err <= rtol:
        raise AssertionError(f"f(x, W') != f(x, W): relative residual {err:.3g}")
