"""Solving the constraints of an :class:`~._graph.Analysis`: refine every axis into *atoms*
(unit ranges on which all constraints are uniform), then join atoms into permutation classes
and scaling classes (union-find) and intersect the groups each scaling class must lie in.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._graph import Analysis, Rep, _trivial_group, transparent

__all__ = ["Atom", "Solution", "solve"]



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
    scale_class: list  # atom id -> scale class id
    perm_class: list  # atom id -> perm class id
    groups: dict  # scale class -> IntertwinerGroup (None: unconstrained R*)
    perm_frozen: set  # frozen perm classes
    labels: dict  # scale class -> list of constraint labels


def _cut_positions(analysis, rep):
    """Unit positions along ``rep`` where some atom or segment boundary falls."""
    cuts, pos = set(), 0
    for s in rep.segs:
        cuts.add(pos)
        if s.kind == "axis":
            for c in analysis.axes[s.axis].cuts:
                if s.start < c < s.start + s.length:
                    cuts.add(pos + c - s.start)
        pos += s.length
    cuts.add(pos)
    return cuts


def _push_cuts(analysis, rep, cuts) -> bool:
    changed, pos = False, 0
    for s in rep.segs:
        if s.kind == "axis":
            ax = analysis.axes[s.axis]
            for c in cuts:
                if pos < c < pos + s.length:
                    local = s.start + c - pos
                    if local not in ax.cuts:
                        ax.cuts.add(local)
                        changed = True
        pos += s.length
    return changed


def _pieces(rep, sol_axis_atoms, atoms):
    """(kind, atom or None, chain, length) runs of ``rep`` at atom resolution."""
    out = []
    for s in rep.segs:
        if s.kind != "axis":
            out.append((s.kind, None, (), s.length))
            continue
        for aid in sol_axis_atoms[s.axis]:
            at = atoms[aid]
            if at.start >= s.start and at.stop <= s.start + s.length:
                out.append(("axis", aid, s.chain, at.size))
    return out


def solve(analysis: Analysis) -> Solution:
    # Every axis starts cut at its ends and at every boundary of every rep that mentions it.
    reps = [c[0] for c in analysis.constraints] + [r for a, b, _ in analysis.ties for r in (a, b) if isinstance(r, Rep)]
    reps += [c.in_rep for c in analysis.calls if isinstance(c.in_rep, Rep)]
    for ax in analysis.axes:
        ax.cuts |= {0, ax.size}
    for r in reps:
        _push_cuts(analysis, r, _cut_positions(analysis, r))
    changed = True
    while changed:
        changed = False
        for a, b, _ in analysis.ties:
            if isinstance(a, Rep) and isinstance(b, Rep):
                cuts = _cut_positions(analysis, a) | _cut_positions(analysis, b)
                changed |= _push_cuts(analysis, a, cuts)
                changed |= _push_cuts(analysis, b, cuts)
    atoms, axis_atoms = [], {}
    for ax in analysis.axes:
        cs = sorted(ax.cuts)
        axis_atoms[ax.id] = []
        for lo, hi in zip(cs[:-1], cs[1:]):
            atoms.append(Atom(len(atoms), ax.id, lo, hi))
            axis_atoms[ax.id].append(atoms[-1].id)
    n = len(atoms)
    full, perm = _UF(n), _UF(n)
    trivial_atoms: set = set()
    frozen_atoms: set = set()
    atom_constraints: dict = {i: [] for i in range(n)}
    for a, b, mode in analysis.ties:
        if not (isinstance(a, Rep) and isinstance(b, Rep)):
            r = a if isinstance(a, Rep) else b
            for kind, aid, chain, _ in _pieces(r, axis_atoms, atoms):
                if kind == "axis":
                    # a tie with a fixed tensor pins the permutation, and the scale too for a full tie
                    frozen_atoms.add(aid)
                    if mode == "full":
                        trivial_atoms.add(aid)
            continue
        pa, pb = _pieces(a, axis_atoms, atoms), _pieces(b, axis_atoms, atoms)
        # Walk both at atom resolution (boundaries agree after the refinement).
        i = j = 0
        while i < len(pa) and j < len(pb):
            ka, ia, ca, la = pa[i]
            kb, ib, cb, lb = pb[j]
            if la != lb:
                raise AssertionError("refinement left misaligned atoms")
            if ka == "axis" and kb == "axis":
                perm.union(ia, ib)
                if mode == "full":
                    if all(transparent(g) for g in ca + cb):
                        full.union(ia, ib)
                    else:
                        trivial_atoms |= {ia, ib}
            elif mode == "full" and "fixed" in (ka, kb):
                for k, aid in ((ka, ia), (kb, ib)):
                    if k == "axis":
                        trivial_atoms.add(aid)
                        frozen_atoms.add(aid)
            elif mode == "perm" and "fixed" in (ka, kb):
                for k, aid in ((ka, ia), (kb, ib)):
                    if k == "axis":
                        frozen_atoms.add(aid)
            i += 1
            j += 1
    for rep, group, freeze_perm in analysis.constraints:
        for kind, aid, chain, _ in _pieces(rep, axis_atoms, atoms):
            if kind != "axis":
                continue
            if freeze_perm:
                frozen_atoms.add(aid)
            if all(transparent(g) for g in chain):
                atom_constraints[aid].append(group)
            else:
                trivial_atoms.add(aid)
    # Frozen-for-permutations atoms with a trivial-scale constraint are fixed outright.
    scale_class = [full.find(i) for i in range(n)]
    perm_class = [perm.find(i) for i in range(n)]
    # every atom of a scale class shares the permutation too
    for i in range(n):
        perm.union(i, scale_class[i])
    perm_class = [perm.find(i) for i in range(n)]
    groups, labels = {}, {}
    for i in range(n):
        c = scale_class[i]
        for g in atom_constraints[i]:
            groups[c] = g if groups.get(c) is None else groups[c].intersect(g)
            if g.label and g.label not in labels.setdefault(c, []):
                labels[c].append(g.label)
        if i in trivial_atoms:
            t = _trivial_group("fixed scale")
            groups[c] = t if groups.get(c) is None else groups[c].intersect(t)
    perm_frozen = {perm_class[i] for i in frozen_atoms}
    return Solution(atoms, axis_atoms, scale_class, perm_class, groups, perm_frozen, labels)
