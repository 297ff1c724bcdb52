"""The groups a symmetry site can carry, as immutable values, and the lattice of their intersections.

A *site* is a hidden space of ``n`` units between two linear maps. Its group is one of

:class:`GeneralLinear` ``GL(n)``
    every invertible matrix (the start of every site: nothing constrains it yet);
:class:`Orthogonal` ``O(n)``
    orthogonal matrices (the residual stream through RMS norms without gains);
:class:`Monomial` ``Monomial(n, S)``
    :math:`D P` with :math:`d_i \\in S`, ``S`` a closed subgroup of the non-zero reals given by
    a :class:`groupcalc.Scalings` (the engine's :math:`S = G_{\\sigma_1}`, or one of the
    structural ones :data:`R_NONZERO`, :data:`POSITIVE`, :data:`SIGNS`, :data:`ONE`);
    ``permutations=False`` keeps only the diagonal (a frozen unit order);
:class:`ScaledPermutation` ``ScaledPermutation(n, S)``
    :math:`c P` with one :math:`c \\in S` for all units (a layer norm's input: permutations
    times the global sign);
:class:`Scalar` ``Scalar(n, S)``
    :math:`c I` with :math:`c \\in S`;
:class:`ComplexDiagonal` ``ComplexDiagonal(n, layout)``
    a non-zero complex scalar (a scaled rotation) on every pair of units of ``layout``: the
    commutant of rotary embeddings, :math:`(\\mathbb C^*)^{n/2}`;
:class:`Block` ``Block(H, inner)``
    block-diagonal matrices with ``H`` blocks of size ``d = n / H``, each block in ``inner``
    (a group of size ``d``), times a permutation of the blocks (``head_perm=True``): the
    heads of attention, the groups of a grouped convolution.

Every group has ``sample``, ``identity``, ``contains``, ``intersect``/``meet``,
``dimension``, ``components`` and ``describe``; ``sample`` and ``identity`` return the
elements of :mod:`._elements` (compact where the group allows: a :class:`Monomial` group gives
a :class:`MonomialElement`, never a dense matrix). ``meet`` is the intersection where it is
representable and a sound subgroup of it where not (a :class:`Meet` says which).

>>> import torch
>>> G = Monomial(4, R_NONZERO)
>>> g = G.sample(torch.Generator().manual_seed(0))
>>> W = torch.randn(4, 3, dtype=torch.float64)
>>> torch.allclose(g.apply(W, 0), g.matrix() @ W)
True
>>> G.contains(g.compose(g.inverse())), G.dimension, G.components
(True, 4, 384)
>>> Orthogonal(4).intersect(G)
Monomial(4, SIGNS, permutations=True)
>>> Block(2, GeneralLinear(3)).intersect(Orthogonal(6))
Block(2, Orthogonal(3), head_perm=True)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import sympy
import torch

from groupcalc import Scalings, a
from groupcalc._groups import IntertwinerGroup

from ._elements import (PAIR_LAYOUTS, BlockElement, ComplexDiagonalElement, DenseElement, Element, MonomialElement,
                        ScalarElement, _as_blocks, _as_monomial, _check_layout, _check_n, _perm_tensor, pair_index)

__all__ = [
    "Group", "GeneralLinear", "GL", "Orthogonal", "Monomial", "ScaledPermutation", "Scalar", "Block", "Meet",
    "ComplexDiagonal", "PAIR_LAYOUTS",
    "R_NONZERO", "POSITIVE", "SIGNS", "ONE", "as_scalings", "LOG_SINGULAR_STD",
]

#: S = R \\ {0}, (0, oo), {1, -1} and {1} (phi is irrelevant for a site's group: it is a = a).
R_NONZERO = Scalings("all", None, -1)
POSITIVE = Scalings("all")
SIGNS = Scalings("trivial", None, -1)
ONE = Scalings("trivial")
_NAMED = {R_NONZERO: "R_NONZERO", POSITIVE: "POSITIVE", SIGNS: "SIGNS", ONE: "ONE"}
_SHORT = {R_NONZERO: "R*", POSITIVE: "R+", SIGNS: "{±1}", ONE: "{1}"}

#: Standard deviation of the log singular values of sampled GL elements (Q1 diag(e^z) Q2).
LOG_SINGULAR_STD = 0.5


# Scalings S -----------------------------------------------------------------------------------

def as_scalings(s) -> Scalings:
    """``S`` as a :class:`groupcalc.Scalings` with ``phi = a`` (one value per group).

    Accepts a Scalings, an :class:`~groupcalc.IntertwinerGroup` (its :math:`G_{\\sigma_1}`),
    one of the names ``"R*"``, ``"R+"``, ``"+-1"``, ``"1"``, or None (``R*``).
    """
    if s is None:
        return R_NONZERO
    if isinstance(s, IntertwinerGroup):
        s = s.one_dimensional()
    elif isinstance(s, str):
        table = {"R*": R_NONZERO, "R+": POSITIVE, "+-1": SIGNS, "±1": SIGNS, "1": ONE}
        if s not in table:
            raise ValueError(f"Argument 'scalings' must be one of {sorted(table)} when a string, not {s!r}.")
        s = table[s]
    if not isinstance(s, Scalings):
        raise ValueError(f"Argument 'scalings' must be a Scalings, an IntertwinerGroup or a name, not {type(s).__name__}.")
    out = Scalings(s.positive, s.generator, s.negative, a)
    _ig(out)  # validates: numeric, generator > 1, negative < 0
    return out


@functools.lru_cache(maxsize=256)
def _ig(s: Scalings) -> IntertwinerGroup:
    return IntertwinerGroup.from_scalings(s)


def _s_meet(s: Scalings, t: Scalings) -> Scalings:
    if s == t:
        return s
    return as_scalings(_ig(s).intersect(_ig(t)))


def _s_contains(s: Scalings, values: torch.Tensor, tol: float) -> bool:
    v = values.detach().cpu().to(torch.float64).numpy()
    return bool(np.all(_ig(s).scalar_in_s(v, tol)))


def _s_sample(s: Scalings, n: int, generator) -> torch.Tensor:
    # The engine draws S (numpy); seed it from the torch generator so one seed drives everything.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.as_tensor(_ig(s).sample_scalings(n, np.random.default_rng(seed)), dtype=torch.float64)


def _s_repr(s: Scalings) -> str:
    if s in _NAMED:
        return _NAMED[s]
    def p(e):
        return "None" if e is None else sympy.sstr(e, sympy_integers=True)
    return f"Scalings({s.positive!r}, {p(s.generator)}, {p(s.negative)})"


def _s_short(s: Scalings) -> str:
    return _SHORT.get(s) or s.describe()


def _one_pivot_in(s: Scalings, scale: torch.Tensor, tol: float) -> bool:
    """Whether every entry of ``scale`` equals the first (relative ``tol``) and that one value
    lies in S: the scalar part of c P and of c I."""
    c = scale[0]
    if bool(((scale - c).abs() > tol * c.abs()).any()):
        return False
    return _s_contains(s, c.reshape(1), tol)


def _one_scalar_dimension(s: Scalings) -> int:
    return 1 if s.positive == "all" else 0


def _one_scalar_components(s: Scalings):
    """Components of {c in S}: infinitely many for a discrete S, 2 with negatives, else 1."""
    if s.positive == "discrete":
        return math.inf
    return 2 if s.negative is not None else 1


def _full_rank(M: torch.Tensor) -> bool:
    M = M.to(torch.float64)
    if not bool(torch.isfinite(M).all()):
        return False
    sv = torch.linalg.svdvals(M)  # (..., n), descending
    return bool((sv[..., -1] > M.shape[-1] * torch.finfo(torch.float64).eps * sv[..., 0]).all())


# Groups ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Meet:
    """The result of :meth:`Group.meet`: a group, whether it is the exact intersection, and why not."""

    group: "Group"
    exact: bool
    reason: str = ""


class Group:
    """A subgroup of GL(n) a site can carry (see the module docstring)."""

    n: int

    def intersect(self, other: "Group") -> "Group":
        """The intersection with ``other``, or a sound subgroup of it where it is not
        representable (see :meth:`meet`, which also says which)."""
        return self.meet(other).group

    def meet(self, other: "Group") -> Meet:
        """The intersection with ``other`` as a :class:`Meet`."""
        if not isinstance(other, Group):
            raise ValueError(f"Argument 'other' must be a Group, not {type(other).__name__}.")
        if other.n != self.n:
            raise ValueError(f"Argument 'other' acts on {other.n} units, this group on {self.n}.")
        m = _meet(self, other)
        if m is NotImplemented:
            m = _meet(other, self)
        return Meet(_simplify(m.group), m.exact, m.reason)

    def _rng(self, generator):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"Argument 'generator' must be a torch.Generator or None, not {type(generator).__name__}.")
        return generator

    def _check_element(self, el):
        if not isinstance(el, Element):
            raise ValueError(f"Argument 'element' must be an Element, not {type(el).__name__}.")
        return el.n == self.n

    def _monomial_form(self, el, tol):
        """(perm, scale) of ``el`` when it acts on ``n`` units and is monomial within ``tol``, else None."""
        return _as_monomial(el, tol) if self._check_element(el) else None

    @property
    def scalar_part(self) -> Scalings:
        """S with :math:`c I \\in G \\iff c \\in S`."""
        raise NotImplementedError  # pragma: no cover

    @property
    def diagonal_part(self) -> Scalings | None:
        """S with every diagonal matrix with entries in S in G (a sound diagonal subgroup),
        or None when G holds no diagonal matrices but scalars."""
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class _WholeMatrices(Group):
    """The groups given by ``n`` alone, GL(n) and O(n): two components, dense elements, and
    ``_units`` (the class's S) as both the scalars and the diagonal matrices they hold."""

    n: int

    def __post_init__(self):
        object.__setattr__(self, "n", _check_n(self.n))

    def __repr__(self):
        return f"{type(self).__name__}({self.n})"

    def identity(self, dtype=torch.float64, device=None) -> DenseElement:
        return DenseElement(torch.eye(self.n, dtype=dtype, device=device), orthogonal=True)

    def contains(self, element, tol=1e-8) -> bool:
        """Whether ``element`` is in the group within ``tol`` (the class docstring says how)."""
        if not self._check_element(element):
            return False
        if isinstance(element, (MonomialElement, ScalarElement)):
            return self._holds_scales(_as_monomial(element, tol)[1], tol)
        return self._holds(element.blocks if isinstance(element, BlockElement) else element.matrix(), tol)

    @property
    def components(self):
        return 2

    @property
    def scalar_part(self):
        return self._units

    @property
    def diagonal_part(self):
        return self._units


@dataclass(frozen=True, repr=False)
class GeneralLinear(_WholeMatrices):
    """GL(n): dimension n^2, 2 components (the sign of the determinant). ``contains``: finite
    and of full numerical rank (numpy's ``matrix_rank`` criterion; block by block)."""

    _units = R_NONZERO

    def sample(self, generator=None, dtype=torch.float64, device=None) -> DenseElement:
        """:math:`Q_1 \\mathrm{diag}(e^{z}) Q_2` with Haar orthogonal :math:`Q_i` and
        :math:`z_i \\sim N(0, \\text{LOG\\_SINGULAR\\_STD}^2)`: well-conditioned, both components."""
        g = self._rng(generator)
        q1, q2 = _haar(self.n, g), _haar(self.n, g)
        z = torch.randn(self.n, generator=g, dtype=torch.float64) * LOG_SINGULAR_STD
        return DenseElement((q1 * torch.exp(z)) @ q2).to(dtype, device)

    @staticmethod
    def _holds_scales(s, tol):
        return bool(torch.isfinite(s).all() and (s != 0).all())

    @staticmethod
    def _holds(M, tol):
        return _full_rank(M)

    @property
    def dimension(self):
        return self.n * self.n

    @property
    def label(self) -> str:
        return f"GL({self.n})"

    def describe(self):
        return f"GL({self.n}): every invertible {self.n}x{self.n} matrix; dimension {self.dimension}, 2 components."


GL = GeneralLinear


def _haar(n, g):
    z = torch.randn(n, n, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    return q * torch.sign(torch.diagonal(r))  # Mezzadri's sign fix: Haar-distributed on O(n)


@dataclass(frozen=True, repr=False)
class Orthogonal(_WholeMatrices):
    """O(n): dimension n(n-1)/2, 2 components (det = +1 and det = -1). ``contains``:
    :math:`\\max |A^T A - I| \\le` ``tol`` (block by block)."""

    _units = SIGNS

    def sample(self, generator=None, dtype=torch.float64, device=None) -> DenseElement:
        """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
        return DenseElement(_haar(self.n, self._rng(generator)), orthogonal=True).to(dtype, device)

    @staticmethod
    def _holds_scales(s, tol):
        return bool(((s.abs() - 1).abs() <= tol).all())

    @staticmethod
    def _holds(M, tol):
        # M is one matrix or an (H, d, d) stack of blocks
        M = M.to(torch.float64)
        eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
        return bool(torch.isfinite(M).all()) and float((M.transpose(-1, -2) @ M - eye).abs().max()) <= tol

    @property
    def dimension(self):
        return self.n * (self.n - 1) // 2

    @property
    def label(self) -> str:
        return f"O({self.n})"

    def describe(self):
        return f"O({self.n}): orthogonal {self.n}x{self.n} matrices; dimension {self.dimension}, 2 components."


@dataclass(frozen=True)
class Monomial(Group):
    """``{D P : d_i in S}`` (``permutations=False``: ``{D : d_i in S}``).

    Dimension ``n`` when S+ = (0, oo), else 0. Components: ``n!`` (if permutations) times
    ``2^n`` (if S has negative numbers); ``math.inf`` when S+ is discrete (g^Z).
    """

    n: int
    scalings: Scalings = R_NONZERO
    permutations: bool = True

    def __post_init__(self):
        object.__setattr__(self, "n", _check_n(self.n))
        object.__setattr__(self, "scalings", as_scalings(self.scalings))
        object.__setattr__(self, "permutations", bool(self.permutations) and self.n > 1)

    @classmethod
    def of_activation(cls, n: int, activation: IntertwinerGroup, permutations: bool = True) -> "Monomial":
        """The site group an activation allows on its input: its :math:`S = G_{\\sigma_1}`."""
        return cls(n, as_scalings(activation), permutations)

    #: each unit takes its own scaling from S (False for :class:`ScaledPermutation`: one c for all)
    per_unit = True

    def __repr__(self):
        return f"Monomial({self.n}, {_s_repr(self.scalings)}, permutations={self.permutations})"

    def sample(self, generator=None, dtype=torch.float64, device=None, perm=None) -> MonomialElement:
        """A uniform permutation (if any) and i.i.d. scalings of S
        (:meth:`groupcalc.IntertwinerGroup.sample_scalings`); ``perm`` (a permutation of
        ``n``) is used instead of drawing one, for permutations tied across sites."""
        g = self._rng(generator)
        perm = _given_or_drawn(perm, self.n, self.permutations, g, "a group without permutations")
        return MonomialElement(perm, _s_sample(self.scalings, self.n, g)).to(dtype, device)

    def identity(self, dtype=torch.float64, device=None):
        return MonomialElement(torch.arange(self.n, device=device), torch.ones(self.n, dtype=dtype, device=device))

    def contains(self, element, tol=1e-8) -> bool:
        """Monomial within ``tol`` (off-pattern entries relative to their row's pivot),
        the identity permutation when ``permutations=False``, pivots in S (relative ``tol``)."""
        m = self._monomial_form(element, tol)
        if m is None:
            return False
        perm, scale = m
        if not self.permutations and not torch.equal(perm, torch.arange(self.n)):
            return False
        return self._pivots_in(scale, tol)

    def _pivots_in(self, scale, tol) -> bool:
        return _s_contains(self.scalings, scale, tol)

    @property
    def dimension(self):
        return self.n if self.scalings.positive == "all" else 0

    @property
    def components(self):
        s = self.scalings
        if s.positive == "discrete":
            return math.inf
        return (math.factorial(self.n) if self.permutations else 1) * (2 ** self.n if s.negative is not None else 1)

    @property
    def scalar_part(self):
        return self.scalings

    @property
    def diagonal_part(self):
        return self.scalings

    @property
    def label(self) -> str:
        return f"{'Perm x ' if self.permutations else ''}Diag({self.n}, {_s_short(self.scalings)})"

    def describe(self):
        comps = self.components
        ctext = "infinitely many components" if comps == math.inf else (
            f"{'n!' if self.permutations else ''}{' 2^n' if self.scalings.negative is not None else ''}".strip() or "1")
        what = "D P with P a permutation" if self.permutations else "D"
        return (f"Monomial({self.n}): {what}, D diagonal with entries in S = {self.scalings.describe()}; "
                f"dimension {self.dimension}, components {ctext} (n = {self.n}).")


@dataclass(frozen=True, repr=False)
class ScaledPermutation(Monomial):
    """``{c P : c in S}``: permutations times one global scalar (a layer norm's input, where
    :math:`\\mathrm{LN}(-x) = -\\mathrm{LN}(x)` but no per-unit sign or scaling is allowed).

    A :class:`Monomial` whose scale vector is constant: its elements are
    :class:`MonomialElement` values with ``scale = c 1``, so everything that permutes the units
    of a monomial site (shared permutations, canonical orders, weight matching) applies; only
    a *choice of scalings* must pick one ``c`` for all units. Dimension 1 when S+ = (0, oo),
    else 0; components ``n!`` (if permutations) times 2 (if S has a negative number).

    >>> G = ScaledPermutation(3, SIGNS)
    >>> g = G.sample(torch.Generator().manual_seed(1))
    >>> G.contains(g), G.contains(MonomialElement(g.perm, torch.tensor([1.0, -1.0, 1.0]))), G.components
    (True, False, 12)
    """

    per_unit = False

    def __repr__(self):
        return f"ScaledPermutation({self.n}, {_s_repr(self.scalings)}, permutations={self.permutations})"

    def sample(self, generator=None, dtype=torch.float64, device=None, perm=None) -> MonomialElement:
        """A uniform permutation (or ``perm``, for permutations tied across sites) times one
        scalar drawn from S."""
        g = self._rng(generator)
        perm = _given_or_drawn(perm, self.n, self.permutations, g, "a group without permutations")
        c = _s_sample(self.scalings, 1, g)[0]
        return MonomialElement(perm, c.expand(self.n)).to(dtype, device)

    def _pivots_in(self, scale, tol) -> bool:
        # contains (Monomial's): one pivot value c in S for every unit (relative tol)
        return _one_pivot_in(self.scalings, scale, tol)

    @property
    def dimension(self):
        return _one_scalar_dimension(self.scalings)

    @property
    def components(self):
        return (math.factorial(self.n) if self.permutations else 1) * _one_scalar_components(self.scalings)

    @property
    def diagonal_part(self):
        return self.scalings if self.n == 1 else None

    @property
    def label(self) -> str:
        return f"{'Perm x ' if self.permutations else ''}{_s_short(self.scalings)} I({self.n})"

    def describe(self):
        what = "c P with P a permutation" if self.permutations else "c I"
        return (f"ScaledPermutation({self.n}): {what}, one c in S = {self.scalings.describe()} for all units; "
                f"dimension {self.dimension}, components {self.components if self.components != math.inf else 'inf'}.")


def _given_or_drawn(perm, n: int, free: bool, g, fixed: str) -> torch.Tensor:
    """``perm`` checked (a permutation of ``n``; the identity unless ``free``), or when None a
    uniform permutation (``free``) or the identity."""
    if perm is not None:
        perm = _perm_tensor(perm, n, "perm").cpu()
        if not free and not torch.equal(perm, torch.arange(n)):
            raise ValueError(f"Argument 'perm' must be the identity for {fixed}.")
        return perm
    return torch.randperm(n, generator=g) if free else torch.arange(n)


@dataclass(frozen=True)
class Scalar(Group):
    """``{c I : c in S}``: dimension 1 when S+ = (0, oo), else 0; components 2 if S has a
    negative number, else 1 (``math.inf`` for a discrete S+)."""

    n: int
    scalings: Scalings = R_NONZERO

    def __post_init__(self):
        object.__setattr__(self, "n", _check_n(self.n))
        object.__setattr__(self, "scalings", as_scalings(self.scalings))

    def __repr__(self):
        return f"Scalar({self.n}, {_s_repr(self.scalings)})"

    def sample(self, generator=None, dtype=torch.float64, device=None) -> ScalarElement:
        return ScalarElement(_s_sample(self.scalings, 1, self._rng(generator))[0], self.n).to(dtype, device)

    def identity(self, dtype=torch.float64, device=None):
        return ScalarElement(torch.ones((), dtype=dtype, device=device), self.n)

    def contains(self, element, tol=1e-8) -> bool:
        m = self._monomial_form(element, tol)
        if m is None:
            return False
        perm, scale = m
        if not torch.equal(perm, torch.arange(self.n)):
            return False
        return _one_pivot_in(self.scalings, scale, tol)

    @property
    def dimension(self):
        return _one_scalar_dimension(self.scalings)

    @property
    def components(self):
        return _one_scalar_components(self.scalings)

    @property
    def scalar_part(self):
        return self.scalings

    @property
    def diagonal_part(self):
        return self.scalings if self.n == 1 else None

    @property
    def label(self) -> str:
        return f"Scalar({self.n}, {_s_short(self.scalings)})"

    def describe(self):
        return (f"Scalar({self.n}): c I with c in S = {self.scalings.describe()}; dimension {self.dimension}, "
                f"{self.components} component(s).")


@dataclass(frozen=True)
class Block(Group):
    """Block-diagonal matrices with ``heads`` blocks, each in ``inner`` (a group of size
    ``d``), times a permutation of the blocks when ``head_perm``; ``n = heads * d``.

    Dimension ``heads * inner.dimension``; components ``heads!`` (if ``head_perm``) times
    ``inner.components ** heads``. ``Block(H, Monomial(d, S))`` samples monomial elements.
    """

    heads: int
    inner: Group
    head_perm: bool = True

    def __post_init__(self):
        object.__setattr__(self, "heads", _check_n(self.heads, "heads"))
        if not isinstance(self.inner, Group) or isinstance(self.inner, Block):
            raise ValueError(f"Argument 'inner' must be a non-block Group, not {self.inner!r}.")
        object.__setattr__(self, "head_perm", bool(self.head_perm) and self.heads > 1)

    def __repr__(self):
        return f"Block({self.heads}, {self.inner!r}, head_perm={self.head_perm})"

    @property
    def n(self):
        return self.heads * self.inner.n

    def sample(self, generator=None, dtype=torch.float64, device=None, perm=None) -> Element:
        """Independent blocks from ``inner`` and a uniform head permutation (if any);
        ``perm`` (a permutation of ``heads``) is used instead of drawing one, for head
        permutations tied across sites (q, k, v); with a monomial ``inner`` it may also be a
        permutation of all ``n`` units moving whole blocks (a group norm's channels)."""
        g = self._rng(generator)
        H, d = self.heads, self.inner.n
        if isinstance(self.inner, Monomial) and perm is not None and len(perm) == self.n:
            return self._sample_with_units(g, perm).to(dtype, device)
        hp = _given_or_drawn(perm, H, self.head_perm, g, "blocks in a fixed order")
        els = [self.inner.sample(g) for _ in range(H)]
        if isinstance(self.inner, Monomial):
            perm = torch.cat([hp[h] * d + e.perm for h, e in enumerate(els)])
            return MonomialElement(perm, torch.cat([e.scale for e in els])).to(dtype, device)
        return BlockElement(torch.stack([e.matrix() for e in els]), hp).to(dtype, device)

    def _sample_with_units(self, g, perm) -> MonomialElement:
        """Monomial blocks with a given permutation of all ``n`` units (shared with the other
        sites of a permutation class, e.g. a group norm's input and output): it must move whole
        blocks (and keep each block's order unless the inner group permutes); scalings drawn."""
        H, d = self.heads, self.inner.n
        p = _perm_tensor(perm, self.n, "perm").cpu()
        src = p.view(H, d)
        hp = src[:, 0] // d
        if not bool((src // d == hp[:, None]).all()) or (not self.head_perm and not torch.equal(hp, torch.arange(H))):
            raise ValueError(f"Argument 'perm' must move whole blocks of {d} units"
                             + ("" if self.head_perm else " and keep the blocks in order") + ".")
        els = [self.inner.sample(g, perm=src[h] % d) for h in range(H)]
        return MonomialElement(p, torch.cat([e.scale for e in els]))

    def identity(self, dtype=torch.float64, device=None):
        if isinstance(self.inner, Monomial):
            return Monomial(self.n, ONE).identity(dtype, device)
        d = self.inner.n
        return BlockElement(torch.eye(d, dtype=dtype, device=device).expand(self.heads, d, d), torch.arange(self.heads, device=device))

    def contains(self, element, tol=1e-8) -> bool:
        """Block-structured within ``tol`` (off-block norms relative to the block's), the
        identity head permutation unless ``head_perm``, and every block in ``inner``."""
        if not self._check_element(element):
            return False
        b = _as_blocks(element, self.heads, tol)
        if b is None:
            return False
        blocks, hp = b
        if not self.head_perm and not torch.equal(hp, torch.arange(self.heads)):
            return False
        return all(self.inner.contains(DenseElement(B), tol) for B in blocks)

    @property
    def dimension(self):
        return self.heads * self.inner.dimension

    @property
    def components(self):
        c = self.inner.components
        if c == math.inf:
            return math.inf
        return (math.factorial(self.heads) if self.head_perm else 1) * c**self.heads

    @property
    def scalar_part(self):
        return self.inner.scalar_part

    @property
    def diagonal_part(self):
        return self.inner.diagonal_part

    @property
    def label(self) -> str:
        return f"Block({self.heads} x {self.inner.label}{', heads permuted' if self.head_perm else ''})"

    def describe(self):
        return (f"Block({self.heads} x {self.inner.label}): block-diagonal with {self.heads} blocks of "
                f"{self.inner.n} units, each in {self.inner.label}, "
                f"{'times a permutation of the blocks' if self.head_perm else 'blocks in a fixed order'}; "
                f"dimension {self.dimension}, components {self.components}.")


@dataclass(frozen=True)
class ComplexDiagonal(Group):
    """``(C*)^{n/2}``: on every pair of units a scaled rotation ``r R(phi)`` (a non-zero complex
    scalar), in the pair ``layout`` of :data:`PAIR_LAYOUTS` (``"half"``: units ``i`` and
    ``i + n/2``, Hugging Face's rotate_half; ``"interleaved"``: ``2i`` and ``2i + 1``).

    The commutant of rotary embeddings (docs/transformer_symmetries.md, section 4): the matrices
    commuting with every rotation by distinct frequencies in those planes. Closed under the
    inverse transpose (``r R(phi)`` -> ``r^-1 R(phi)``), so a query/key pair stays in it.
    Dimension ``n`` (a modulus and an angle per pair); connected (``C*`` is), 1 component.
    ``sample``: moduli ``exp(z)``, ``z ~ N(0, LOG_SINGULAR_STD^2)``, angles uniform.

    >>> G = ComplexDiagonal(4)
    >>> g = G.sample(torch.Generator().manual_seed(0))
    >>> G.contains(g.dual()), G.contains(GeneralLinear(4).sample(torch.Generator().manual_seed(0)))
    (True, False)
    """

    n: int
    layout: str = "half"

    def __post_init__(self):
        object.__setattr__(self, "n", _check_n(self.n))
        if self.n % 2:
            raise ValueError(f"Argument 'n' must be even (pairs of units), not {self.n}.")
        object.__setattr__(self, "layout", _check_layout(self.layout))

    def __repr__(self):
        return f"ComplexDiagonal({self.n}, {self.layout!r})"

    def sample(self, generator=None, dtype=torch.float64, device=None) -> ComplexDiagonalElement:
        g = self._rng(generator)
        m = self.n // 2
        r = torch.exp(torch.randn(m, generator=g, dtype=torch.float64) * LOG_SINGULAR_STD)
        phi = torch.rand(m, generator=g, dtype=torch.float64) * (2 * math.pi)
        return ComplexDiagonalElement(r * torch.cos(phi), r * torch.sin(phi), self.layout).to(dtype, device)

    def identity(self, dtype=torch.float64, device=None) -> ComplexDiagonalElement:
        m = self.n // 2
        return ComplexDiagonalElement(torch.ones(m, dtype=dtype, device=device), torch.zeros(m, dtype=dtype, device=device),
                                      self.layout)

    def complex_of(self, element, tol=1e-8):
        """(real, imag) of ``element`` (float64, CPU) when it is a scaled rotation on every pair
        within ``tol`` (entries relative to the largest), else None."""
        if not self._check_element(element):
            return None
        if isinstance(element, ComplexDiagonalElement) and element.layout == self.layout:
            return element.real.detach().cpu().to(torch.float64), element.imag.detach().cpu().to(torch.float64)
        M = element.matrix().detach().cpu().to(torch.float64)
        if not bool(torch.isfinite(M).all()):
            return None
        p, q = pair_index(self.n, self.layout)
        a, b = M[p, p], M[q, p]
        R = ComplexDiagonalElement(a, b + (a == 0) * (b == 0) * 1.0, self.layout).matrix()
        scale = max(float(M.abs().max()), 1e-300)
        if float((R - M).abs().max()) > tol * scale or bool(((a * a + b * b).sqrt() <= tol * scale).any()):
            return None
        return a, b

    def contains(self, element, tol=1e-8) -> bool:
        """A scaled rotation on every pair of ``layout``, zero elsewhere, within ``tol``."""
        return self.complex_of(element, tol) is not None

    def frame(self, X, Y, tol=1e-8):
        """The canonical element for features ``X`` (rows by ``A``) and ``Y`` (rows by ``A^-T``),
        each ``(n, p)`` or None: per pair the complex rows ``w = x_p + i x_q`` (``X``: ``w -> z w``;
        ``Y``: ``w -> w / conj(z)``); ``|z|`` balances the two norms (makes the one present unit),
        the phase makes the sum of the rows' entries real and positive (it turns by ``arg z`` in
        both). Returns ``(element, invariants, ambiguous)``: invariants the pairs' norm products (both
        kinds of rows; zeros with one kind: its norms are made 1),
        ambiguous the pairs with vanishing features or a vanishing sum."""
        m = self.n // 2
        p, q = pair_index(self.n, self.layout)

        def cplx(F):
            if F is None:
                return None
            F = F.detach().to(torch.float64).cpu()
            return torch.complex(F[p], F[q])

        wx, wy = cplx(X), cplx(Y)
        nx = None if wx is None else torch.linalg.vector_norm(wx, dim=1)
        ny = None if wy is None else torch.linalg.vector_norm(wy, dim=1)
        floor = 1e-300
        if nx is not None and ny is not None:
            dead = (nx <= tol * max(float(nx.max()), floor)) | (ny <= tol * max(float(ny.max()), floor))
            mod = torch.where(dead, 1.0, (ny.clamp_min(floor) / nx.clamp_min(floor)).sqrt())
            inv = nx * ny
        elif nx is not None:
            dead = nx <= tol * max(float(nx.max()), floor)
            mod, inv = torch.where(dead, 1.0, 1.0 / nx.clamp_min(floor)), torch.zeros(m, dtype=torch.float64)
        elif ny is not None:
            dead = ny <= tol * max(float(ny.max()), floor)
            mod, inv = torch.where(dead, 1.0, ny), torch.zeros(m, dtype=torch.float64)
        else:
            return self.identity(), torch.zeros(m, dtype=torch.float64), m
        # the phase key: the sum of every (balanced) complex row, X and Y alike, turns by arg z
        key = torch.zeros(m, dtype=torch.complex128)
        size = torch.zeros(m, dtype=torch.float64)
        if wx is not None:
            key, size = key + mod * wx.sum(1), size + mod * wx.abs().sum(1)
        if wy is not None:
            key, size = key + wy.sum(1) / mod, size + wy.abs().sum(1) / mod
        flat = key.abs() <= tol * size.clamp_min(floor)
        one = torch.ones_like(key)
        phase = torch.where(flat | dead, one, key.abs().clamp_min(floor) / torch.where(flat | dead, one, key))
        z = mod * phase
        el = ComplexDiagonalElement(z.real.contiguous(), z.imag.contiguous(), self.layout)
        return el, inv.sort(descending=True).values, int((dead | flat).sum())

    def fit(self, Xa, Ya, Xb, Yb):
        """The element ``z`` per pair bringing b's features closest to a's in least squares:
        ``z = <w_b, w_a> / |w_b|^2`` on the rows by ``A`` (``X``), else ``1 / conj(u)`` with the
        same fit ``u`` on the rows by ``A^-T`` (``Y``); pairs without features keep 1."""
        p, q = pair_index(self.n, self.layout)

        def cplx(F):
            F = F.detach().to(torch.float64).cpu()
            return torch.complex(F[p], F[q])

        def ls(Fa, Fb):
            wa, wb = cplx(Fa), cplx(Fb)
            den = (wb.abs() ** 2).sum(1)
            u = (wb.conj() * wa).sum(1) / den.clamp_min(1e-300)
            return torch.where((den <= 1e-300) | (u.abs() <= 1e-300), torch.ones_like(u), u)

        if Xa is not None and Xb is not None:
            z = ls(Xa, Xb)
        elif Ya is not None and Yb is not None:
            z = 1.0 / ls(Ya, Yb).conj()
        else:
            return self.identity()
        return ComplexDiagonalElement(z.real.contiguous(), z.imag.contiguous(), self.layout)

    @property
    def dimension(self):
        return self.n

    @property
    def components(self):
        return 1

    @property
    def scalar_part(self):
        return R_NONZERO

    @property
    def diagonal_part(self):
        return None  # the diagonal matrices in it are the pair-constant ones: only the scalars are all of a kind

    @property
    def label(self) -> str:
        return f"C*^{self.n // 2}({self.layout})"

    def describe(self):
        pairs = "i and i + n/2" if self.layout == "half" else "2i and 2i + 1"
        return (f"ComplexDiagonal({self.n}): a non-zero complex scalar (a scaled rotation) on each pair of units "
                f"{pairs}; dimension {self.dimension}, 1 component.")


# The lattice ----------------------------------------------------------------------------------

def _meet(x: Group, y: Group):
    """Meet of x and y, or NotImplemented when only (y, x) is handled."""
    if x == y:
        return Meet(x, True)
    if isinstance(x, GeneralLinear):
        return Meet(y, True)
    if isinstance(x, ComplexDiagonal) or isinstance(y, ComplexDiagonal):
        return _meet_complex(x, y)
    if isinstance(x, ScaledPermutation) or isinstance(y, ScaledPermutation):
        return _meet_scaled(x, y)
    n = x.n
    if isinstance(x, Orthogonal):
        if isinstance(y, Monomial):
            return Meet(Monomial(n, _s_meet(y.scalings, SIGNS), y.permutations), True)
        if isinstance(y, Scalar):
            return Meet(Scalar(n, _s_meet(y.scalings, SIGNS)), True)
        if isinstance(y, Block):
            return Meet(Block(y.heads, y.inner.intersect(Orthogonal(y.inner.n)), y.head_perm), True)
        return NotImplemented
    if isinstance(x, Monomial):
        if isinstance(y, Monomial):
            return Meet(Monomial(n, _s_meet(x.scalings, y.scalings), x.permutations and y.permutations), True)
        if isinstance(y, Scalar):
            return Meet(Scalar(n, _s_meet(x.scalings, y.scalings)), True)
        if isinstance(y, Block):
            # D P in Block iff every block is monomial in S (the head permutation only moves blocks);
            # diagonal iff the head permutation and every block's permutation are identities.
            inner = y.inner.intersect(Monomial(y.inner.n, x.scalings, x.permutations))
            return Meet(Block(y.heads, inner, y.head_perm and x.permutations), True)
        return NotImplemented
    if isinstance(x, Scalar):
        if isinstance(y, (Scalar, Block)):
            return Meet(Scalar(n, _s_meet(x.scalings, y.scalar_part)), True)
        return NotImplemented
    if isinstance(x, Block) and isinstance(y, Block):
        if x.heads == y.heads:
            m = x.inner.meet(y.inner)  # a sound inner subgroup keeps its reason
            return Meet(Block(x.heads, m.group, x.head_perm and y.head_perm), m.exact, m.reason)
        dx, dy = x.diagonal_part, y.diagonal_part
        why = f"blocks of {x.inner.n} and of {y.inner.n} units on one site"
        if dx is not None and dy is not None:
            return Meet(Monomial(n, _s_meet(dx, dy), False), False, why + ": kept the diagonal matrices in both")
        return Meet(Scalar(n, _s_meet(x.scalar_part, y.scalar_part)), False, why + ": kept the scalars in both")
    return NotImplemented


def _meet_scaled(x: Group, y: Group):
    """Meet with a :class:`ScaledPermutation` ``{c P : c in S}`` on either side."""
    sp, o = (x, y) if isinstance(x, ScaledPermutation) else (y, x)
    n, S, perms = sp.n, sp.scalings, sp.permutations
    if isinstance(o, GeneralLinear):
        return Meet(sp, True)
    if isinstance(o, Orthogonal):
        return Meet(ScaledPermutation(n, _s_meet(S, SIGNS), perms), True)
    if isinstance(o, Monomial):  # c P in {D P' : d_i in T} iff c in T (P = I when o has no permutations)
        return Meet(ScaledPermutation(n, _s_meet(S, o.scalings), perms and o.permutations), True)
    if isinstance(o, Scalar):
        return Meet(Scalar(n, _s_meet(S, o.scalings)), True)
    if isinstance(o, Block):
        # c P with P mapping blocks to blocks and c in the blocks' scalars: not representable
        # (Block(H, ScaledPermutation) has a scalar per block); keep the block permutations
        inner = o.inner.intersect(Monomial(o.inner.n, ONE, perms))
        return Meet(Block(o.heads, inner, o.head_perm and perms), False,
                    "a global scalar times permutations inside blocks: kept the permutations without the scalar")
    return NotImplemented


def _meet_complex(x: Group, y: Group):
    """Meet with a :class:`ComplexDiagonal` on either side (its real scalars are the only part
    every other kind shares exactly; the rest is a sound subgroup, with the reason)."""
    c, o = (x, y) if isinstance(x, ComplexDiagonal) else (y, x)
    n = c.n
    if isinstance(o, GeneralLinear):
        return Meet(c, True)
    if isinstance(o, ComplexDiagonal):
        if o.layout == c.layout:
            return Meet(c, True)
        return Meet(Scalar(n, R_NONZERO), False, "complex scalars on pairs in two layouts: kept the real scalars")
    if isinstance(o, Scalar):
        return Meet(Scalar(n, o.scalings), True)
    if isinstance(o, Block) and o.heads == 1:
        return _meet_complex(c, o.inner)  # one block is its inner group
    if isinstance(o, Orthogonal):
        return Meet(Scalar(n, SIGNS), False, "rotations of pairs (complex scalars of modulus 1) kept as +-I")
    return Meet(Scalar(n, _s_meet(R_NONZERO, o.scalar_part)), False,
                f"complex scalars on pairs and {o.label}: kept the real scalars in both")


def _simplify(g: Group) -> Group:
    """One form per group: blocks of one unit are a monomial group, one block is its inner."""
    if isinstance(g, Block):
        if g.heads == 1:
            return g.inner
        if g.inner.n == 1:
            return Monomial(g.n, g.inner.diagonal_part, g.head_perm)
    if isinstance(g, ScaledPermutation):
        if g.n == 1 or not g.permutations:
            return Scalar(g.n, g.scalings) if g.n > 1 else Monomial(1, g.scalings, False)
        if g.scalings == ONE:
            return Monomial(g.n, ONE, True)
    if isinstance(g, Orthogonal) and g.n == 1:
        return Monomial(1, SIGNS, False)
    if isinstance(g, GeneralLinear) and g.n == 1:
        return Monomial(1, R_NONZERO, False)
    if isinstance(g, Scalar) and g.n == 1:
        return Monomial(1, g.scalings, False)
    return g
