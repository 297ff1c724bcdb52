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
:class:`Scalar` ``Scalar(n, S)``
    :math:`c I` with :math:`c \\in S`;
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

from ._elements import (BlockElement, DenseElement, Element, MonomialElement, ScalarElement, _as_blocks, _as_monomial,
                        _check_n, _perm_tensor)

__all__ = [
    "Group", "GeneralLinear", "GL", "Orthogonal", "Monomial", "Scalar", "Block", "Meet",
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
        c = scale[0]
        if not torch.equal(perm, torch.arange(self.n)) or bool(((scale - c).abs() > tol * c.abs()).any()):
            return False
        return _s_contains(self.scalings, c.reshape(1), tol)

    @property
    def dimension(self):
        return 1 if self.scalings.positive == "all" else 0

    @property
    def components(self):
        if self.scalings.positive == "discrete":
            return math.inf
        return 2 if self.scalings.negative is not None else 1

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
        permutations tied across sites (q, k, v)."""
        g = self._rng(generator)
        H, d = self.heads, self.inner.n
        hp = _given_or_drawn(perm, H, self.head_perm, g, "blocks in a fixed order")
        els = [self.inner.sample(g) for _ in range(H)]
        if isinstance(self.inner, Monomial):
            perm = torch.cat([hp[h] * d + e.perm for h, e in enumerate(els)])
            return MonomialElement(perm, torch.cat([e.scale for e in els])).to(dtype, device)
        return BlockElement(torch.stack([e.matrix() for e in els]), hp).to(dtype, device)

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


# The lattice ----------------------------------------------------------------------------------

def _meet(x: Group, y: Group):
    """Meet of x and y, or NotImplemented when only (y, x) is handled."""
    if x == y:
        return Meet(x, True)
    if isinstance(x, GeneralLinear):
        return Meet(y, True)
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
            return Meet(Block(x.heads, x.inner.intersect(y.inner), x.head_perm and y.head_perm), True)
        dx, dy = x.diagonal_part, y.diagonal_part
        why = f"blocks of {x.inner.n} and of {y.inner.n} units on one site"
        if dx is not None and dy is not None:
            return Meet(Monomial(n, _s_meet(dx, dy), False), False, why + ": kept the diagonal matrices in both")
        return Meet(Scalar(n, _s_meet(x.scalar_part, y.scalar_part)), False, why + ": kept the scalars in both")
    return NotImplemented


def _simplify(g: Group) -> Group:
    """One form per group: blocks of one unit are a monomial group, one block is its inner."""
    if isinstance(g, Block):
        if g.heads == 1:
            return g.inner
        if g.inner.n == 1:
            return Monomial(g.n, g.inner.diagonal_part, g.head_perm)
    if isinstance(g, Orthogonal) and g.n == 1:
        return Monomial(1, SIGNS, False)
    if isinstance(g, GeneralLinear) and g.n == 1:
        return Monomial(1, R_NONZERO, False)
    if isinstance(g, Scalar) and g.n == 1:
        return Monomial(1, g.scalings, False)
    return g
