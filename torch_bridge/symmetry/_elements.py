"""The elements of a site's group, as immutable values (the groups: :mod:`._site_groups`).

An element is an invertible ``n x n`` matrix :math:`A` of a site's group, acting on a hidden
vector, :math:`h \\mapsto A h`. Every element has ``compose``, ``inverse``, ``dual``
(:math:`g^{-T}`), ``matrix`` (dense, for tests), ``apply`` and ``apply_dual`` (act along one
tensor dimension) and ``phi`` (the engine's homomorphism of an activation). Elements store what
they need and nothing dense that is not:

:class:`MonomialElement`
    :math:`A = D P`, a permutation ``perm = pi`` and a scale vector ``scale = s``:
    :math:`(A h)_i = s_i h_{\\pi(i)}` (a 2048-unit site costs 2048 numbers);
:class:`ScalarElement`
    :math:`A = c I_n`;
:class:`DenseElement`
    any invertible matrix (``orthogonal=True`` when :math:`A^T A = I`);
:class:`BlockElement`
    :math:`(A h)_a = B_a h_{\\pi(a)}` on blocks: an ``(H, d, d)`` stack and a head permutation.
:class:`ComplexDiagonalElement`
    a non-zero complex scalar per pair of units (a scaled rotation in each plane): the
    commutant of rotary embeddings.

``apply(t, dim)`` maps ``t`` to :math:`A` applied along ``dim`` (the rows of a producer,
``W' = A W``); ``apply_dual(t, dim)`` applies :math:`A^{-T}` (the columns of a consumer:
``apply_dual(W, 1) == W A^{-1}``). With ``repeat=r`` the dimension holds ``n * r`` entries,
unit-major (index ``unit * r + k``: a flattened conv feature map).

>>> import torch
>>> g = MonomialElement(torch.tensor([2, 0, 1]), torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
>>> W = torch.randn(3, 4, dtype=torch.float64)
>>> torch.allclose(g.apply(W, 0), g.matrix() @ W), torch.allclose(g.apply_dual(W.T, 1), W.T @ g.inverse().matrix())
(True, True)
>>> g.compose(g.inverse()) == MonomialElement(torch.arange(3), torch.ones(3, dtype=torch.float64))
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch

from groupcalc import a
from groupcalc._groups import IntertwinerGroup

__all__ = ["Element", "MonomialElement", "DenseElement", "ScalarElement", "BlockElement", "ComplexDiagonalElement",
           "PAIR_LAYOUTS", "pair_index"]


def _check_n(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Argument {name!r} must be a positive integer, not {n!r}.")
    return int(n)


def _float_tensor(x, name) -> torch.Tensor:
    t = torch.as_tensor(x).detach()
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t.clone(memory_format=torch.contiguous_format)


def _perm_tensor(p, n, name="perm") -> torch.Tensor:
    p = torch.as_tensor(p).detach()
    if p.dim() != 1 or p.shape[0] != n or p.is_floating_point() or p.dtype == torch.bool:
        raise ValueError(f"Argument {name!r} must be an integer vector of length {n}, not {p.dtype} of shape {tuple(p.shape)}.")
    p = p.to(torch.long).clone(memory_format=torch.contiguous_format)
    if not torch.equal(torch.sort(p.cpu()).values, torch.arange(n)):
        raise ValueError(f"Argument {name!r} must be a permutation of 0..{n - 1}.")
    return p


def _trepr(t: torch.Tensor) -> str:
    """A tensor's repr that evaluates back exactly (``tensor`` = ``torch.tensor``) up to
    1000 entries; torch's summarised repr beyond."""
    if t.numel() > 1000:
        return repr(t)
    dev = "" if t.device.type == "cpu" else f", device={str(t.device)!r}"
    return f"tensor({t.tolist()!r}, dtype={t.dtype}{dev})"


def _teq(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.cpu(), y.cpu())
    return x == y


def _thash(x):
    if isinstance(x, torch.Tensor):
        v = x.detach().cpu()
        v = v + 0 if v.is_floating_point() else v  # -0.0 == 0.0 must hash alike
        return (str(x.dtype), tuple(x.shape), hash(v.contiguous().numpy().tobytes()))
    return hash(x)


class Element:
    """An invertible ``n x n`` matrix of a site's group (see the module docstring)."""

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(_teq(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def __hash__(self):
        return hash((type(self).__name__,) + tuple(_thash(getattr(self, f.name)) for f in fields(self)))

    # to be given by every kind
    n: int

    @property
    def size(self) -> int:
        """Number of units (``n``)."""
        return self.n

    def matrix(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fn(self, x):  # (..., n) -> (..., n): A along the last dim
        raise NotImplementedError  # pragma: no cover

    def _fn_dual(self, x):
        raise NotImplementedError  # pragma: no cover

    def equals(self, other: "Element", tol: float = 1e-10) -> bool:
        """Whether two elements are the same matrix up to ``tol`` (relative to the largest entry)."""
        A, B = self.matrix().to(torch.float64).cpu(), other.matrix().to(torch.float64).cpu()
        return A.shape == B.shape and float((A - B).abs().max()) <= tol * max(1.0, float(A.abs().max()))

    def compose(self, other: "Element") -> "Element":
        """The product ``self @ other`` (``other`` acts first)."""
        _same_n(self, other)
        if isinstance(other, ScalarElement):
            return self._scaled(other.value)
        if isinstance(self, ScalarElement):
            return other._scaled(self.value)
        return DenseElement(self.matrix() @ other.matrix().to(self.dtype))

    def apply(self, t: torch.Tensor, dim: int, repeat: int = 1) -> torch.Tensor:
        """``t`` with :math:`A` applied along ``dim`` (``dim``'s size is ``n * repeat``);
        dtype and device follow ``t``."""
        return _along(self, t, dim, repeat, self._fn)

    def apply_dual(self, t: torch.Tensor, dim: int, repeat: int = 1) -> torch.Tensor:
        """``t`` with :math:`A^{-T}` applied along ``dim``; dtype and device follow ``t``."""
        return _along(self, t, dim, repeat, self._fn_dual)

    def phi(self, activation: IntertwinerGroup) -> "Element":
        """:math:`\\phi_\\sigma(A)` for the activation's group (Proposition 3.4).

        Linear and affine activations: ``A``; constant ones: the identity; non-linear ones:
        ``P diag(phi(d_i))``, defined for monomial (and scalar) elements only.
        """
        if not isinstance(activation, IntertwinerGroup):
            raise ValueError(f"Argument 'activation' must be an IntertwinerGroup, not {type(activation).__name__}.")
        if activation.kind in ("general_linear", "affine"):
            return self
        if activation.kind == "constant":
            return _identity_like(self)
        raise ValueError(f"phi of the non-linear activation {activation.label or ''!s} is defined on monomial "
                         f"elements only, not on a {type(self).__name__}.")

    @property
    def dtype(self):
        return self._ref().dtype

    @property
    def device(self):
        return self._ref().device


def _same_n(x, y):
    if not isinstance(y, Element):
        raise ValueError(f"Argument 'other' must be an Element, not {type(y).__name__}.")
    if x.n != y.n:
        raise ValueError(f"Argument 'other' acts on {y.n} units, this element on {x.n}.")


def _along(el, t, dim, repeat, fn):
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"Argument 't' must be a floating-point tensor, not {type(t).__name__}"
                         + (f" of dtype {t.dtype}" if isinstance(t, torch.Tensor) else "") + ".")
    if not isinstance(dim, int) or not -t.dim() <= dim < t.dim():
        raise ValueError(f"Argument 'dim' must be a dimension of a {t.dim()}-d tensor, not {dim!r}.")
    repeat = _check_n(repeat, "repeat")
    dim %= t.dim()
    n = el.n
    if t.shape[dim] != n * repeat:
        raise ValueError(f"Argument 't' has {t.shape[dim]} entries along dim {dim}; the element acts on {n} units"
                         + (f" x {repeat}" if repeat > 1 else "") + ".")
    work = torch.promote_types(t.dtype, el.dtype)
    x = t.detach().to(work).movedim(dim, -1)
    lead = x.shape[:-1]
    if repeat > 1:
        x = x.reshape(*lead, n, repeat).transpose(-1, -2)
    y = fn(x, work, t.device)
    if repeat > 1:
        y = y.transpose(-1, -2).reshape(*lead, n * repeat)
    return y.movedim(-1, dim).to(t.dtype).contiguous()


def _identity_like(el):
    return MonomialElement(torch.arange(el.n, device=el.device), torch.ones(el.n, dtype=el.dtype, device=el.device))


@dataclass(frozen=True, eq=False)
class MonomialElement(Element):
    """:math:`A = D P`: ``(A h)_i = scale[i] * h[perm[i]]``."""

    perm: torch.Tensor
    scale: torch.Tensor

    def __post_init__(self):
        s = _float_tensor(self.scale, "scale")
        if s.dim() != 1:
            raise ValueError(f"Argument 'scale' must be a vector, not of shape {tuple(s.shape)}.")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "perm", _perm_tensor(self.perm, s.shape[0]).to(s.device))

    def __repr__(self):
        return f"MonomialElement(perm={_trepr(self.perm)}, scale={_trepr(self.scale)})"

    @property
    def n(self) -> int:
        return self.scale.shape[0]

    def _ref(self):
        return self.scale

    def to(self, dtype=None, device=None) -> "MonomialElement":
        return MonomialElement(self.perm.to(device or self.perm.device), self.scale.to(device=device, dtype=dtype))

    def matrix(self):
        A = torch.zeros(self.n, self.n, dtype=self.dtype, device=self.device)
        A[torch.arange(self.n, device=self.device), self.perm] = self.scale
        return A

    def _fn(self, x, work, dev):
        return x[..., self.perm.to(dev)] * self.scale.to(dev, work)

    def _fn_dual(self, x, work, dev):
        return x[..., self.perm.to(dev)] / self.scale.to(dev, work)

    def _scaled(self, c):
        return MonomialElement(self.perm, self.scale * c.to(self.scale))

    def compose(self, other):
        _same_n(self, other)
        if isinstance(other, MonomialElement):
            p = self.perm
            return MonomialElement(other.perm.to(p.device)[p], self.scale * other.scale.to(self.scale)[p])
        return super().compose(other)

    def inverse(self):
        q = torch.argsort(self.perm)
        return MonomialElement(q, 1.0 / self.scale[q])

    def dual(self):
        # (D P)^{-T} = D^{-1} P^{-T} = D^{-1} P
        return MonomialElement(self.perm, 1.0 / self.scale)

    def phi(self, activation):
        if isinstance(activation, IntertwinerGroup) and activation.kind == "monomial":
            if activation.scalings.phi == a:
                return self
            v = activation.phi_scalar(self.scale.detach().cpu().to(torch.float64).numpy())
            return MonomialElement(self.perm, torch.as_tensor(np.asarray(v, dtype=float)).to(self.scale))
        return super().phi(activation)


@dataclass(frozen=True, eq=False)
class ScalarElement(Element):
    """:math:`A = c I_n`."""

    value: torch.Tensor
    n: int

    def __post_init__(self):
        v = _float_tensor(self.value, "value")
        if v.dim() != 0:
            raise ValueError(f"Argument 'value' must be a scalar, not of shape {tuple(v.shape)}.")
        object.__setattr__(self, "value", v)
        object.__setattr__(self, "n", _check_n(self.n))

    def __repr__(self):
        return f"ScalarElement(value={_trepr(self.value)}, n={self.n})"

    def _ref(self):
        return self.value

    def to(self, dtype=None, device=None):
        return ScalarElement(self.value.to(device=device, dtype=dtype), self.n)

    def matrix(self):
        return self.value * torch.eye(self.n, dtype=self.dtype, device=self.device)

    def _fn(self, x, work, dev):
        return x * self.value.to(dev, work)

    def _fn_dual(self, x, work, dev):
        return x / self.value.to(dev, work)

    def _scaled(self, c):
        return ScalarElement(self.value * c.to(self.value), self.n)

    def inverse(self):
        return ScalarElement(1.0 / self.value, self.n)

    dual = inverse

    def phi(self, activation):
        if isinstance(activation, IntertwinerGroup) and activation.kind == "monomial":
            v = activation.phi_scalar(np.asarray([float(self.value)]))
            return ScalarElement(torch.tensor(float(v[0]), dtype=self.value.dtype, device=self.value.device), self.n)
        return super().phi(activation)


@dataclass(frozen=True, eq=False)
class DenseElement(Element):
    """Any invertible matrix; ``orthogonal=True`` promises :math:`A^T A = I` (exact inverse
    by transposition)."""

    matrix_: torch.Tensor
    orthogonal: bool = False

    def __post_init__(self):
        M = _float_tensor(self.matrix_, "matrix")
        if M.dim() != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"Argument 'matrix' must be a square matrix, not of shape {tuple(M.shape)}.")
        object.__setattr__(self, "matrix_", M)
        object.__setattr__(self, "orthogonal", bool(self.orthogonal))

    def __repr__(self):
        return f"DenseElement({_trepr(self.matrix_)}, orthogonal={self.orthogonal})"

    @property
    def n(self):
        return self.matrix_.shape[0]

    def _ref(self):
        return self.matrix_

    def to(self, dtype=None, device=None):
        return DenseElement(self.matrix_.to(device=device, dtype=dtype), self.orthogonal)

    def matrix(self):
        return self.matrix_.clone()

    @functools.cached_property
    def _inv(self):
        return self.matrix_.T.clone() if self.orthogonal else torch.linalg.inv(self.matrix_)

    def _fn(self, x, work, dev):
        return x @ self.matrix_.to(dev, work).T

    def _fn_dual(self, x, work, dev):
        return x @ self._inv.to(dev, work)  # (A^{-T} x)_i = sum_j x_j (A^{-1})_{ji}

    def _scaled(self, c):
        return DenseElement(self.matrix_ * c.to(self.matrix_), self.orthogonal and bool(c.abs() == 1))

    def compose(self, other):
        _same_n(self, other)
        if isinstance(other, DenseElement):
            return DenseElement(self.matrix_ @ other.matrix_.to(self.matrix_), self.orthogonal and other.orthogonal)
        if isinstance(other, ScalarElement):
            return self._scaled(other.value)
        return DenseElement(self.matrix_ @ other.matrix().to(self.matrix_))

    def inverse(self):
        return DenseElement(self._inv, self.orthogonal)

    def dual(self):
        return self if self.orthogonal else DenseElement(self._inv.T, False)


@dataclass(frozen=True, eq=False)
class BlockElement(Element):
    """:math:`(A h)_a = B_a h_{\\pi(a)}` on ``H`` blocks of ``d`` units: ``blocks`` is an
    ``(H, d, d)`` stack, ``head_perm`` the block permutation :math:`\\pi`."""

    blocks: torch.Tensor
    head_perm: torch.Tensor

    def __post_init__(self):
        B = _float_tensor(self.blocks, "blocks")
        if B.dim() != 3 or B.shape[1] != B.shape[2]:
            raise ValueError(f"Argument 'blocks' must be an (H, d, d) stack, not of shape {tuple(B.shape)}.")
        object.__setattr__(self, "blocks", B)
        object.__setattr__(self, "head_perm", _perm_tensor(self.head_perm, B.shape[0], "head_perm").to(B.device))

    def __repr__(self):
        return f"BlockElement(blocks={_trepr(self.blocks)}, head_perm={_trepr(self.head_perm)})"

    @property
    def heads(self):
        return self.blocks.shape[0]

    @property
    def n(self):
        return self.blocks.shape[0] * self.blocks.shape[1]

    def _ref(self):
        return self.blocks

    def to(self, dtype=None, device=None):
        return BlockElement(self.blocks.to(device=device, dtype=dtype), self.head_perm.to(device or self.head_perm.device))

    def matrix(self):
        H, d = self.blocks.shape[:2]
        A = torch.zeros(H, d, H, d, dtype=self.dtype, device=self.device)
        A[torch.arange(H), :, self.head_perm, :] = self.blocks
        return A.reshape(self.n, self.n)

    def _heads(self, x, B, dev):
        H, d = self.blocks.shape[:2]
        xh = x.reshape(*x.shape[:-1], H, d)[..., self.head_perm.to(dev), :]
        return torch.einsum("hij,...hj->...hi", B, xh).reshape(x.shape)

    @functools.cached_property
    def _inv_blocks(self):
        return torch.linalg.inv(self.blocks)

    def _fn(self, x, work, dev):
        return self._heads(x, self.blocks.to(dev, work), dev)

    def _fn_dual(self, x, work, dev):
        return self._heads(x, self._inv_blocks.transpose(1, 2).to(dev, work), dev)

    def _scaled(self, c):
        return BlockElement(self.blocks * c.to(self.blocks), self.head_perm)

    def compose(self, other):
        _same_n(self, other)
        if isinstance(other, BlockElement) and other.heads == self.heads:
            p = self.head_perm
            return BlockElement(self.blocks @ other.blocks.to(self.blocks)[p], other.head_perm.to(p.device)[p])
        return super().compose(other)

    def inverse(self):
        q = torch.argsort(self.head_perm)
        return BlockElement(self._inv_blocks[q], q)

    def dual(self):
        # (blockdiag(B) P)^{-T} = blockdiag(B^{-T}) P
        return BlockElement(self._inv_blocks.transpose(1, 2), self.head_perm)


# Reading an element in another form ------------------------------------------------------------

def _as_monomial(el: Element, tol: float):
    """(perm, scale) in float64 on the CPU when ``el`` is monomial within ``tol``, else None."""
    if isinstance(el, MonomialElement):
        return el.perm.cpu(), el.scale.detach().cpu().to(torch.float64)
    if isinstance(el, ScalarElement):
        return torch.arange(el.n), torch.full((el.n,), float(el.value), dtype=torch.float64)
    M = el.matrix().detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(M).all()):
        return None
    cols = M.abs().argmax(1)
    if len(set(cols.tolist())) != el.n:
        return None
    piv = M[torch.arange(el.n), cols]
    off = M.clone()
    off[torch.arange(el.n), cols] = 0
    if bool((piv == 0).any()) or bool((off.abs() > tol * piv.abs()[:, None]).any()):
        return None
    return cols, piv


def _as_blocks(el: Element, H: int, tol: float):
    """(blocks (H, d, d) float64, head_perm) when ``el`` is block-structured, else None."""
    n, d = el.n, el.n // H
    if isinstance(el, BlockElement) and el.heads == H:
        return el.blocks.detach().cpu().to(torch.float64), el.head_perm.cpu()
    if isinstance(el, MonomialElement):
        p, s = el.perm.cpu(), el.scale.detach().cpu().to(torch.float64)
        src = (p // d).reshape(H, d)
        if not bool((src == src[:, :1]).all()):
            return None
        hp = src[:, 0]
        if len(set(hp.tolist())) != H:
            return None
        B = torch.zeros(H, d, d, dtype=torch.float64)
        B[torch.arange(n) // d, torch.arange(n) % d, p % d] = s
        return B, hp
    M = el.matrix().detach().cpu().to(torch.float64).reshape(H, d, H, d)
    norms = M.pow(2).sum((1, 3)).sqrt()
    hp = norms.argmax(1)
    if len(set(hp.tolist())) != H:
        return None
    off = norms.clone()
    off[torch.arange(H), hp] = 0
    if bool((off > tol * norms[torch.arange(H), hp][:, None]).any()):
        return None
    return M[torch.arange(H), :, hp, :], hp


# Complex scalars per pair of units (the commutant of rotary embeddings) -----------------------

#: Pair layouts: "half" pairs unit i with i + n/2 (rotate_half, Hugging Face LLaMA), "interleaved"
#: pairs 2i with 2i + 1 (GPT-J, the complex form of Meta's LLaMA).
PAIR_LAYOUTS = ("half", "interleaved")


def _check_layout(layout) -> str:
    if layout not in PAIR_LAYOUTS:
        raise ValueError(f"Argument 'layout' must be one of {PAIR_LAYOUTS}, not {layout!r}.")
    return layout


def pair_index(n: int, layout: str) -> tuple:
    """(first, second): index vectors of the two units of every pair (``n // 2`` pairs)."""
    m = n // 2
    if _check_layout(layout) == "half":
        return torch.arange(m), torch.arange(m, n)
    return torch.arange(0, n, 2), torch.arange(1, n, 2)


@dataclass(frozen=True, eq=False)
class ComplexDiagonalElement(Element):
    """:math:`A = \\bigoplus_i r_i R(\\phi_i)`: on pair ``i`` (units ``(p_i, q_i)`` of
    ``layout``) the 2 x 2 block ``[[a_i, -b_i], [b_i, a_i]]``, i.e. multiplication of
    :math:`h_{p_i} + \\mathrm{i}\\, h_{q_i}` by :math:`z_i = a_i + \\mathrm{i} b_i \\neq 0`
    (``real = a``, ``imag = b``). Its inverse transpose is the scaled rotation by the same angle
    with the inverse modulus, :math:`z \\mapsto 1/\\bar z`; its inverse is :math:`1/z`."""

    real: torch.Tensor
    imag: torch.Tensor
    layout: str = "half"

    def __post_init__(self):
        a, b = _float_tensor(self.real, "real"), _float_tensor(self.imag, "imag")
        if a.dim() != 1 or a.shape != b.shape:
            raise ValueError(f"Arguments 'real' and 'imag' must be vectors of one length, not of shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}.")
        b = b.to(a)
        if bool(((a == 0) & (b == 0)).any()):
            raise ValueError("Arguments 'real' and 'imag' must not both vanish on a pair (the element is singular).")
        object.__setattr__(self, "real", a)
        object.__setattr__(self, "imag", b)
        object.__setattr__(self, "layout", _check_layout(self.layout))

    def __repr__(self):
        return f"ComplexDiagonalElement(real={_trepr(self.real)}, imag={_trepr(self.imag)}, layout={self.layout!r})"

    @property
    def n(self) -> int:
        return 2 * self.real.shape[0]

    def _ref(self):
        return self.real

    def to(self, dtype=None, device=None) -> "ComplexDiagonalElement":
        return ComplexDiagonalElement(self.real.to(device=device, dtype=dtype), self.imag.to(device=device, dtype=dtype),
                                      self.layout)

    def matrix(self):
        p, q = (i.to(self.device) for i in pair_index(self.n, self.layout))
        A = torch.zeros(self.n, self.n, dtype=self.dtype, device=self.device)
        A[p, p], A[q, q], A[p, q], A[q, p] = self.real, self.real, -self.imag, self.imag
        return A

    def _pairs(self, x, a, b, dev):
        p, q = (i.to(dev) for i in pair_index(self.n, self.layout))
        xp, xq = x[..., p], x[..., q]
        y = torch.empty_like(x)
        y[..., p] = a * xp - b * xq
        y[..., q] = b * xp + a * xq
        return y

    def _fn(self, x, work, dev):
        return self._pairs(x, self.real.to(dev, work), self.imag.to(dev, work), dev)

    def _fn_dual(self, x, work, dev):
        a, b = self.real.to(dev, work), self.imag.to(dev, work)
        r2 = a * a + b * b  # 1 / conj(z) = z / |z|^2
        return self._pairs(x, a / r2, b / r2, dev)

    def _scaled(self, c):
        return ComplexDiagonalElement(self.real * c.to(self.real), self.imag * c.to(self.real), self.layout)

    def compose(self, other):
        _same_n(self, other)
        if isinstance(other, ComplexDiagonalElement) and other.layout == self.layout:
            c, d = other.real.to(self.real), other.imag.to(self.real)
            return ComplexDiagonalElement(self.real * c - self.imag * d, self.real * d + self.imag * c, self.layout)
        return super().compose(other)

    def inverse(self):
        r2 = self.real**2 + self.imag**2
        return ComplexDiagonalElement(self.real / r2, -self.imag / r2, self.layout)

    def dual(self):
        r2 = self.real**2 + self.imag**2
        return ComplexDiagonalElement(self.real / r2, self.imag / r2, self.layout)
