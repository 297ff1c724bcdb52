"""Immutable values of a symmetry spec: :class:`Site` (a class of unit spaces with its group),
:class:`Binding` (a parameter range an element acts on) and :class:`SymmetryElement` (a
mapping site name -> group element)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ._elements import Element, MonomialElement
from ._site_groups import Block, Monomial

__all__ = ["Site", "Binding", "SymmetryElement"]


@dataclass(frozen=True)
class Site:
    """A class of hidden unit spaces carrying one element of ``group``.

    Attributes
    ----------
    name : str
        The producing module of the site's first unit range (``"layers.0.0.bn1"``), with the
        range when the site covers part of that module's outputs (``"...bn2[8:24]"``).
    size : int
        Number of units.
    group : torch_bridge.symmetry._site_groups.Group
        The group: ``Monomial(n, S)``, ``Orthogonal(n)``, ``GeneralLinear(n)``, ``Scalar``, ``Block``.
    members : tuple of str
        Every module output range the site's element acts on (residual additions tie several;
        a key space appears as ``"dual:<name>"``: it carries the inverse transpose).
    constraints : tuple of str
        What restricted the group (activations, norms, attention, ...).
    permutation : str
        ``"free"``, ``"fixed"``, or the name of the site whose permutation (head permutation)
        this one shares (batch-norm input and output, queries and values).
    notes : tuple of str
        Site-specific caveats (sound subgroups claimed).
    """

    name: str
    size: int
    group: object
    members: tuple
    constraints: tuple = ()
    permutation: str = "free"
    notes: tuple = ()

    @property
    def dimension(self) -> int:
        """Dimension of the site's group (continuous parameters)."""
        return self.group.dimension

    @property
    def components(self):
        """Connected components this site contributes (a shared permutation counted only on
        the site holding it); ``math.inf`` for discrete scalings."""
        c = self.group.components
        if c == math.inf or self.permutation == "free":
            return c
        return c // _perm_count(self.group)


def _perm_count(g) -> int:
    if isinstance(g, Monomial):
        return math.factorial(g.n) if g.permutations else 1
    if isinstance(g, Block):
        inner = math.factorial(g.inner.n) ** g.heads if isinstance(g.inner, Monomial) and g.inner.permutations else 1
        return (math.factorial(g.heads) if g.head_perm else 1) * inner  # blocks of monomials share all units' order
    return 1


@dataclass(frozen=True)
class Binding:
    """One range of one parameter dimension that a site's element acts on.

    ``param`` is the canonical name of the underlying tensor (``aliases`` all its names);
    ``dim`` the tensor dimension; ``offset``/``length`` the units of the range along ``dim``
    (each unit spans ``repeat`` consecutive entries after a flatten); ``site`` the site (None:
    fixed units); ``relation`` "same" or "dual" (the range carries the site element's inverse
    transpose); ``chain`` the activation groups between the site and this use (the action uses
    phi); ``variance`` "co", "contra", "perm", "diag", "bn_gamma" or "bn_var"; ``other_site``
    the input site of a "diag"/"bn_gamma" binding; ``part`` (j, G): only rows j of G groups;
    ``primary`` False for a later use of a tensor dimension already bound (a tied weight, a module
    called twice): the relation ties it to the first, and the action applies the first only;
    ``crossed`` True when the units lie along a dimension of a tensor that carries another site's
    units along another one (token mixing): the module's output is then not "units x samples".
    """

    param: str
    aliases: tuple
    dim: int
    variance: str
    site: str | None
    offset: int
    length: int
    repeat: int = 1
    relation: str = "same"
    chain: tuple = ()
    module: str = ""
    op: str = ""
    other_site: str | None = None
    part: tuple | None = None
    primary: bool = True
    crossed: bool = False


class SymmetryElement(Mapping):
    """An element of a network's symmetry group: an immutable mapping site name -> element
    (:mod:`._elements`); missing sites are the identity."""

    def __init__(self, elements: Mapping | None = None):
        els = dict(elements or {})
        for k, v in els.items():
            if not isinstance(v, Element):
                raise TypeError(f"Argument 'elements' must map site names to group elements; {k!r} maps to "
                                f"{type(v).__name__}.")
        self._els = MappingProxyType(els)

    def __getitem__(self, k):
        return self._els[k]

    def __iter__(self):
        return iter(self._els)

    def __len__(self):
        return len(self._els)

    def __repr__(self):
        return f"SymmetryElement({dict(self._els)!r})"

    @property
    def perms(self) -> dict:
        """Permutations of the monomial sites (convenience view)."""
        return {k: v.perm for k, v in self._els.items() if isinstance(v, MonomialElement)}

    @property
    def scales(self) -> dict:
        """Scalings of the monomial sites (convenience view)."""
        return {k: v.scale for k, v in self._els.items() if isinstance(v, MonomialElement)}

    def to(self, device) -> "SymmetryElement":
        return SymmetryElement({k: v.to(device=device) for k, v in self._els.items()})


def _is_inf(c) -> bool:
    return isinstance(c, float) and math.isinf(c)


def _count_str(c):
    if _is_inf(c) or c.bit_length() > 10_000:
        return None
    return str(c)


def _fmt_count(logc: float, exact) -> str:
    if exact is not None and exact < 10**15:
        return str(exact)
    if _is_inf(logc):
        return "inf"
    return f"10^{logc:.1f}"
