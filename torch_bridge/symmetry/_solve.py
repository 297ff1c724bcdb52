"""Solving what the tracer recorded: refine every axis into *atoms* (unit ranges on which all
constraints are uniform), join atoms into *classes* (one element per class: relation "same",
or its inverse transpose: "dual" -- a union-find with parity), intersect the groups each class
must lie in (starting from GL(n), in the lattice of :mod:`._site_groups`), and group classes
that share a permutation (batch norm's input and output, the heads of queries, keys and
values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._activations import transparent
from ._site_groups import ONE, Block, ComplexDiagonal, GeneralLinear, Monomial, Orthogonal, Scalar, ScaledPermutation
from ._trace import Constraint, Rep, Trace

__all__ = ["Atom", "Solution", "solve", "pieces"]


class _ParityUF:
    """Union-find with parity: parity 1 relates an atom to the inverse transpose of its root."""

    def __init__(self, n):
        self.p = list(range(n))
        self.par = [0] * n  # parity relative to the parent
        self.conflict = set()

    def find(self, i):
        path = []
        while self.p[i] != i:
            path.append(i)
            i = self.p[i]
        acc = 0
        for j in reversed(path):
            acc ^= self.par[j]
            self.par[j] = acc
            self.p[j] = i
        return i, (self.par[path[0]] if path else 0)

    def union(self, i, j, parity):
        ri, pi = self.find(i)
        rj, pj = self.find(j)
        if ri == rj:
            if pi ^ pj != parity:
                self.conflict.add(ri)
            return
        lo, hi = min(ri, rj), max(ri, rj)
        self.p[hi] = lo
        self.par[hi] = pi ^ pj ^ parity


class _UF:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, i):
        while self.p[i] != i:
            self.p[i] = self.p[self.p[i]]
            i = self.p[i]
        return i

    def union(self, i, j):
        i, j = self.find(i), self.find(j)
        if i != j:
            self.p[max(i, j)] = min(i, j)


@dataclass
class Atom:
    id: int
    axis: int
    start: int
    stop: int

    @property
    def size(self):
        return self.stop - self.start


@dataclass
class Solution:
    atoms: list
    axis_atoms: dict  # axis id -> [atom ids in order]
    cls: list  # atom id -> class id (root atom)
    parity: list  # atom id -> 0 (the class element) or 1 (its inverse transpose)
    groups: dict  # class -> Group
    reasons: dict  # class -> [constraint reasons]
    perm_group: dict  # class -> perm-group id
    absorbed: set  # classes whose scalings a later layer absorbs (batch-norm inputs, ...)
    notes: list = field(default_factory=list)


def _cut_positions(tr, rep):
    cuts, pos = set(), 0
    for s in rep.segs:
        cuts.add(pos)
        if s.kind == "axis":
            for c in tr.axes[s.axis].cuts:
                if s.start < c < s.start + s.length:
                    cuts.add(pos + c - s.start)
        pos += s.length
    cuts.add(pos)
    return cuts


def _push_cuts(tr, rep, cuts) -> bool:
    changed, pos = False, 0
    for s in rep.segs:
        if s.kind == "axis":
            ax = tr.axes[s.axis]
            for local in (s.start, s.start + s.length):  # the segment's own ends (a slice)
                if local not in ax.cuts:
                    ax.cuts.add(local)
                    changed = True
            for c in cuts:
                if pos < c < pos + s.length:
                    local = s.start + c - pos
                    if local not in ax.cuts:
                        ax.cuts.add(local)
                        changed = True
        pos += s.length
    return changed


def pieces(rep, axis_atoms, atoms):
    """(kind, atom id or None, chain, length) runs of ``rep`` at atom resolution."""
    out = []
    for s in rep.segs:
        if s.kind != "axis":
            out.append((s.kind, None, (), s.length))
            continue
        for aid in axis_atoms[s.axis]:
            at = atoms[aid]
            if at.start >= s.start and at.stop <= s.start + s.length:
                out.append(("axis", aid, s.chain, at.size))
    return out


def _group_of(c: Constraint, n: int):
    if c.kind == "monomial":
        return Monomial(n, c.scalings, c.perm != "fixed")
    if c.kind == "scaled_perm":
        return ScaledPermutation(n, c.scalings, c.perm != "fixed")
    if c.kind == "orthogonal":
        return Orthogonal(n)
    if c.kind == "gl":
        return GeneralLinear(n)
    if c.kind == "scalar":
        return Scalar(n, c.scalings)
    if c.kind == "complex":
        return ComplexDiagonal(n, c.layout)
    if c.kind == "block":
        if n % c.heads:
            raise AssertionError("block constraint on a misaligned atom")
        return Block(c.heads, _group_of(c.inner, n // c.heads), c.perm != "fixed")
    raise AssertionError(c.kind)


def _inner_scalars(c: Constraint):
    """The scalars c that may be drawn independently on each piece of a block cut by site
    boundaries (the diagonal matrices the inner group holds; engine scalings; None: R*)."""
    from ._activations import sign_scalings, trivial_scalings

    if c.kind == "monomial":
        return c.scalings
    if c.kind in ("scaled_perm", "scalar"):
        # one scalar for the whole block: a block cut by a site boundary would get two
        # different ones (half a group norm's group flipped), so only the identity is sound
        return trivial_scalings(c.reason + " (block split across sites)")
    if c.kind == "orthogonal":
        return sign_scalings(c.reason)
    return None  # GL and the groups of attention hold every non-zero scalar


def _perm_size(g):
    if isinstance(g, Monomial):
        return ("monomial", g.n) if g.permutations and g.n > 1 else None
    if isinstance(g, Block):
        if isinstance(g.inner, Monomial):  # blocks of monomials share their whole unit permutation
            return ("monomial", g.n) if g.head_perm or g.inner.permutations else None
        return ("block", g.heads) if g.head_perm else None
    return None


def _freeze_perm(g):
    if isinstance(g, ScaledPermutation):
        return g.intersect(Monomial(g.n, None, False))  # c I
    if isinstance(g, Monomial):
        return Monomial(g.n, g.scalings, False)
    if isinstance(g, Block):
        return _monomial_blocks(Block(g.heads, _freeze_perm(g.inner) if isinstance(g.inner, Monomial) else g.inner, False))
    return g


def _monomial_blocks(g):
    """Blocks of scalars ``c_h I`` (a sign per group-norm group whose units cannot move) as
    blocks of the same group written as a :class:`ScaledPermutation` without permutations, so
    that they sample, share and act as monomial elements like every other block of monomials."""
    if isinstance(g, Block) and isinstance(g.inner, Scalar):
        return Block(g.heads, ScaledPermutation(g.inner.n, g.inner.scalings, False), g.head_perm)
    return g


def solve(tr: Trace) -> Solution:
    reps = [r for r, _ in tr.constraints]
    reps += [r for t in tr.ties for r in (t.a, t.b) if isinstance(r, Rep)]
    reps += [b.rep for b in tr.bindings if isinstance(b.rep, Rep)] + [b.other for b in tr.bindings if isinstance(b.other, Rep)]
    for ax in tr.axes:
        ax.cuts |= {0, ax.size}
    # head-split constraints cut at head boundaries only if a class is not one atom: the
    # refinement below keeps atoms as large as the recorded representations allow
    for r in reps:
        _push_cuts(tr, r, _cut_positions(tr, r))
    changed = True
    while changed:
        changed = False
        for t in tr.ties:
            if isinstance(t.a, Rep) and isinstance(t.b, Rep) and t.relation != "heads":
                cuts = _cut_positions(tr, t.a) | _cut_positions(tr, t.b)
                changed |= _push_cuts(tr, t.a, cuts)
                changed |= _push_cuts(tr, t.b, cuts)
        for b in tr.bindings:
            if isinstance(b.rep, Rep) and isinstance(b.other, Rep):
                cuts = _cut_positions(tr, b.rep) | _cut_positions(tr, b.other)
                changed |= _push_cuts(tr, b.rep, cuts)
                changed |= _push_cuts(tr, b.other, cuts)
    atoms, axis_atoms = [], {}
    for ax in tr.axes:
        cs = sorted(ax.cuts)
        axis_atoms[ax.id] = []
        for lo, hi in zip(cs[:-1], cs[1:]):
            atoms.append(Atom(len(atoms), ax.id, lo, hi))
            axis_atoms[ax.id].append(atoms[-1].id)
    n = len(atoms)
    uf, perm = _ParityUF(n), _UF(n)
    trivial: dict = {}  # atom -> reason (scalings fixed to 1, permutation kept)
    frozen: dict = {}  # atom -> reason (identity only)
    perm_frozen: dict = {}  # atom -> reason (no permutation; diagonal part kept)
    for t in tr.ties:
        if not (isinstance(t.a, Rep) and isinstance(t.b, Rep)):
            r = t.a if isinstance(t.a, Rep) else t.b
            for kind, aid, chain, _ in pieces(r, axis_atoms, atoms):
                if kind == "axis":
                    frozen[aid] = t.reason or "tied to a fixed tensor"
            continue
        pa, pb = pieces(t.a, axis_atoms, atoms), pieces(t.b, axis_atoms, atoms)
        if t.relation == "heads":
            # the head permutation of a's class is the unit permutation of b's (sizes differ)
            for ka, ia, _, _ in pa:
                for kb, ib, _, _ in pb:
                    if ka == "axis" and kb == "axis":
                        perm.union(ia, ib)
            continue
        if len(pa) != len(pb):
            raise AssertionError("refinement left misaligned atoms")
        for (ka, ia, ca, la), (kb, ib, cb, lb) in zip(pa, pb):
            if la != lb:
                raise AssertionError("refinement left misaligned atoms")
            if ka == "axis" and kb == "axis":
                perm.union(ia, ib)
                if t.relation in ("same", "dual"):
                    if all(transparent(g) for g in ca + cb):
                        uf.union(ia, ib, 1 if t.relation == "dual" else 0)
                    else:
                        # phi_a(g_a) = phi_b(g_b) with non-identity phi: keep permutations only
                        trivial[ia] = trivial[ib] = f"{t.reason} after an activation with phi != identity"
                        if t.relation == "dual":
                            uf.union(ia, ib, 1)
            elif "axis" in (ka, kb) and "fixed" in (ka, kb):
                # zero channels (padding) add no constraint; fixed ones pin the units
                aid = ia if ka == "axis" else ib
                if t.relation == "perm":
                    perm_frozen[aid] = f"{t.reason}: permutation tied to fixed channels"
                else:
                    frozen[aid] = f"{t.reason}: tied to fixed channels"
    cons: dict = {i: [] for i in range(n)}
    split_notes: list = []
    for rep, c in tr.constraints:
        ps = [p for p in pieces(rep, axis_atoms, atoms)]
        for kind, aid, chain, length in ps:
            if kind != "axis":
                continue
            if chain and not all(transparent(g) for g in chain):
                trivial[aid] = f"{c.reason} after an activation with phi != identity"
                if c.kind == "monomial" and c.perm == "fixed":
                    frozen[aid] = c.reason
                continue
            split = len([p for p in ps if p[0] == "axis"]) != 1
            if split and (c.kind == "complex" or (c.kind == "block" and c.inner.kind == "complex" and
                                                   length % (rep.units // c.heads))):
                # complex scalars on pairs that an atom boundary may cut: independent elements on
                # the pieces would not commute with the rotations; only the identity is sound
                frozen[aid] = f"{c.reason} (rotary pairs split across sites)"
                continue
            if c.kind == "block":
                if split:
                    # the heads span several atoms: keep what is sound on each piece
                    split_notes.append(f"{c.reason}: its {c.heads} blocks are split across several sites; "
                                       "permutations of whole blocks are not represented there")
                    if length % (rep.units // c.heads) == 0:
                        h = length // (rep.units // c.heads)
                        cons[aid].append((Constraint("block", c.reason, heads=h, inner=c.inner, perm="fixed"), c.reason))
                    else:
                        cons[aid].append((Constraint("scalar", c.reason + " (heads split across sites)",
                                                     _inner_scalars(c.inner)), c.reason))
                    continue
            cons[aid].append((c, c.reason))
    cls = [uf.find(i)[0] for i in range(n)]
    par = [uf.find(i)[1] for i in range(n)]
    for i in range(n):
        perm.union(i, cls[i])
    groups, reasons = {}, {}
    notes = list(dict.fromkeys(split_notes))
    for i in range(n):
        c = cls[i]
        g = groups.get(c)
        if g is None:
            g = GeneralLinear(atoms[i].size)
        for con, why in cons[i]:
            m = g.meet(_group_of(con, atoms[i].size))
            if not m.exact and m.reason:
                notes.append(f"{why}: {m.reason}")
            g = m.group
            if why and why not in reasons.setdefault(c, []):
                reasons[c].append(why)
        if i in trivial:
            g = g.intersect(Monomial(atoms[i].size, ONE))
            reasons.setdefault(c, []).append(trivial[i]) if trivial[i] not in reasons.get(c, []) else None
        if i in frozen:
            g = g.intersect(Monomial(atoms[i].size, ONE, False))
        if i in perm_frozen:
            g = g.intersect(Monomial(atoms[i].size, None, False))
        groups[c] = _monomial_blocks(g)
    conflicts = {uf.find(a)[0] for a in uf.conflict}
    for c in set(cls):
        if c in conflicts:
            # tied to its own inverse transpose: g = g^{-T}, i.e. g orthogonal (then both parities agree)
            groups[c] = _monomial_blocks(groups[c].intersect(Orthogonal(atoms[c].size)))
            reasons.setdefault(c, []).append("tied to its own inverse transpose (g = g^-T: orthogonal)")
    # permutation groups: every class in one shares its permutation (or head permutation)
    members: dict = {}
    for c in set(cls):
        members.setdefault(perm.find(c), set()).add(c)
    perm_group = {}
    for pid, cs in members.items():
        for c in cs:
            perm_group[c] = pid
        if len(cs) < 2:
            continue
        kinds = {_perm_size(groups[c]) for c in cs}
        has = {k[1] for k in kinds - {None}}  # a monomial perm of n units may share a head perm of n heads
        # blocks of monomials share their unit permutation only if all have the same blocks;
        # a monomial class sharing it then permutes whole blocks too
        shapes = {(g.heads, g.inner.n, g.head_perm, g.inner.permutations) for g in (groups[c] for c in cs)
                  if isinstance(g, Block) and isinstance(g.inner, Monomial)}
        # (a Scalar class, c I, has the identity permutation: the classes sharing it keep theirs)
        if len(has) > 1 or len(shapes) > 1 or (has and None in kinds and any(
                isinstance(groups[c], (Monomial, Block, Scalar)) and _perm_size(groups[c]) is None for c in cs)):
            for c in cs:
                groups[c] = _freeze_perm(groups[c])
        elif shapes:
            H, d, hp, inner_perms = shapes.pop()
            for c in cs:
                if isinstance(groups[c], Monomial):
                    groups[c] = groups[c].intersect(Block(H, Monomial(d, None, inner_perms), hp))
    absorbed = {c for c in set(cls) if any(r.endswith("input") for r in reasons.get(c, []))}
    return Solution(atoms, axis_atoms, cls, par, groups, reasons, perm_group, absorbed, notes)

