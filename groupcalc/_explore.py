"""Exploring the parameter space of one derivation: the cases of :func:`groupcalc.derive`.

The oracle answers questions about parameters at reference values and records the answers;
:class:`_Explorer` derives at the reference, then at every special value (``p = v`` where
``p != v`` was recorded), on the other side of every recorded inequality, for the family
complementary to every "e is not a positive integer" condition, at every grid point and
every point of a special line that no case covers yet. The cases it returns partition the
parameter space (tested in tests/test_partition.py; docs/engine.md says how far that goes).
Cases with the same answer are merged, and every case gets its status from its certificate.
"""

from __future__ import annotations

import numpy as np
import sympy

from activations import x

from . import _budget
from ._engine import Analysis, analyse
from ._pieces import Oracle, Undecided
from ._result import Case, GroupCalcError, Scalings, a

#: Steps kept in reserve: a further parameter case is explored only while this many remain.
EXPLORE_RESERVE = 400
#: Special values p = v with a larger sympy operation count are not derived (they come from
#: the side conditions of witness points, and sympy can take unbounded time on them).
MAX_SPECIAL_OPS = 40
#: Tolerance of the numeric check of claimed elements (relative).
CHECK_TOL = 1e-8


_CHECK_POINTS = (sympy.Integer(0), sympy.Integer(1), sympy.Integer(-1), sympy.Rational(1, 3), sympy.Rational(-7, 3),
                 sympy.Rational(5, 2), sympy.Rational(-1, 2), sympy.Integer(4), sympy.Integer(-4))


def _undefined_points(e) -> list:
    """The check points and real poles of rational parts at which ``e`` (no parameters) gives no finite number."""
    out = []
    for p in _CHECK_POINTS:
        try:
            v = sympy.N(e.subs(x, p), 20)
        except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
            continue  # _check_real names it
        if v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or not v.is_number:
            out.append(p)
    try:
        num, den = sympy.fraction(sympy.together(e))
        if den.is_polynomial(x) and x in den.free_symbols:
            out += [r for r in sympy.Poly(den, x).real_roots() if r not in out]
    except (sympy.PolynomialError, TypeError, ValueError):
        pass
    return out


def extend_by_continuity(expr, label):
    """``expr`` extended by its limit at the isolated points where it is not defined.

    Users write ``x*cos(log(abs(x)))`` or ``sin(x)/x`` meaning the continuous extension. At
    each check point (and real pole of a rational part) where the formula gives no finite
    number, both one-sided limits are computed (:func:`groupcalc._limits.side_limit`); when
    they are finite and equal, sigma takes that value there and a note says so. Otherwise
    the formula is refused, naming the point. Formulas with parameters are not extended (the
    limit may depend on them). Returns ``(expr, notes)``.
    """
    from ._limits import side_limit

    if expr.free_symbols - {x} or x not in expr.free_symbols:
        return expr, ()
    points = _undefined_points(expr)
    if not points:
        return expr, ()
    values, notes = [], []
    for p in points:
        try:
            lims = [side_limit(expr, p, d) for d in ("+", "-")]
        except Undecided:
            raise GroupCalcError(f"formula {label!r} is not defined at x = {p}, and its limit there cannot be decided") from None
        if any(v is None for v in lims):
            raise GroupCalcError(f"formula {label!r} is not defined at x = {p}: it has no finite limit there")
        if sympy.simplify(lims[0] - lims[1]) != 0:
            raise GroupCalcError(f"formula {label!r} is not defined at x = {p}: its one-sided limits {lims[1]} (left) "
                                 f"and {lims[0]} (right) differ")
        values.append((lims[0], sympy.Ne(x, p)))
        notes.append(f"extended by continuity at x = {p}: sigma({p}) = {lims[0]}")
    out = expr
    for v, cond in reversed(values):
        out = sympy.Piecewise((out, cond), (v, True))
    return out, tuple(notes)


def _check_real(expr, reference, label):
    """Reject formulas that are not real-valued or not defined on all of R."""
    e = expr.subs(reference)
    pts = _CHECK_POINTS
    for p in pts:
        try:
            v = sympy.N(e.subs(x, p), 20)
        except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
            raise GroupCalcError(f"formula {label!r} cannot be evaluated at x = {p}") from None
        if v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or not v.is_number:
            raise GroupCalcError(f"formula {label!r} is not defined at x = {p}")
        if abs(sympy.im(v)) > 1e-15:
            raise GroupCalcError(f"formula {label!r} is not real-valued (at x = {p} it is {sympy.N(v, 6)})")
    # poles of rational parts on the real line
    num, den = sympy.fraction(sympy.together(e.rewrite(sympy.Piecewise) if e.has(sympy.Abs, sympy.Max, sympy.Min, sympy.sign, sympy.Heaviside) else e))
    if den.is_polynomial(x) and x in den.free_symbols:
        for r in sympy.Poly(den, x).real_roots():
            if sympy.simplify(num.subs(x, r)) != 0:
                raise GroupCalcError(f"formula {label!r} is not defined at x = {r}")


class _Node:
    def __init__(self, conds, analysis, expr, reference, unknown=False):
        self.conds = list(conds)  # the fixed conditions that led here (special values)
        self.analysis = analysis
        self.expr = expr
        self.reference = dict(reference)
        self.unknown = unknown
        self.recorded: list = []  # conditions the derivation assumed (normalised atoms)
        self.numeric: list = []  # (certificate step number, what was settled numerically)
        self.case: Case | None = None


def _atoms(cond):
    if cond is sympy.true or cond is True:
        return []
    return list(cond.args) if isinstance(cond, sympy.And) else [cond]


class _Explorer:
    """Derive at the reference values, then at each special value the derivation assumed away."""

    def __init__(self, free, syms, domain):
        self.free = free
        self.syms = syms
        self.domain = domain
        self.current: _Node | None = None
        self.nodes: list = []
        self._special_nodes: dict = {}  # (conditions, formula) -> node already derived there
        self._normal: dict = {}  # recorded condition -> its normalised atoms

    def _in_domain(self, subs):
        for prm in self.free:
            v = subs.get(self.syms[prm.name])
            if v is not None and v.is_number and not prm.admits(v):
                return False
        return all(c.subs(subs) is not sympy.false for c in self.domain)

    def run(self, node: _Node) -> _Node:
        oracle = Oracle(node.reference)
        oracle.numeric_steps = _StepLog(node.analysis, node.numeric)
        self.current = node
        try:
            analyse(node.expr, oracle, node.analysis)
        except Undecided as err:
            node.analysis.step(f"The derivation could not decide a step: {err}")
            node.unknown = True
        finally:  # also when the budget runs out: the steps so far hold under these conditions
            atoms = []
            for c in oracle.conditions:
                if c not in self._normal:
                    self._normal[c] = _atoms(_normalise(c, self.syms))
                atoms += self._normal[c]
            node.recorded = [t for t in dict.fromkeys(atoms) if t is not sympy.true]
        node.case = self._case(node)
        self.nodes.append(node)
        self.current = None
        return node

    def explore(self, expr, fixed, reference) -> _Node:
        root = self.run(_Node(fixed, Analysis(), expr, reference))
        if not self.free:
            return root
        todo = [root]
        # the reference may sit on a special value (an equality was recorded): look at a generic point too
        for atom in root.recorded:
            if isinstance(atom, sympy.Eq):
                p = sorted(atom.free_symbols, key=lambda s: s.name)[0]
                for shift in (sympy.Rational(1, 3), sympy.Rational(-1, 3), sympy.Rational(5, 4)):
                    ref = {**reference, p: reference[p] + shift}
                    if self._in_domain(ref) and _can_explore():
                        todo.append(self.run(_Node(fixed, Analysis(), expr, ref)))
                        break
                break
        # the other side of every recorded one-parameter inequality
        for atom in list(root.recorded):
            if isinstance(atom, (sympy.StrictLessThan, sympy.StrictGreaterThan)) and len(atom.free_symbols) == 1:
                p = next(iter(atom.free_symbols))
                try:
                    bounds = [b for b in sympy.solve(atom.lhs - atom.rhs, p) if b.is_number and b.is_real]
                except Exception:  # noqa: BLE001
                    bounds = []
                for b in bounds:
                    for ref_val in (b + sympy.Rational(1, 2), b - sympy.Rational(1, 2)):
                        ref = {**reference, p: ref_val}
                        if atom.subs(ref) is sympy.false and self._in_domain(ref) and _can_explore():
                            if not any(all(t.subs(ref) is sympy.true for t in n.recorded) for n in todo):
                                todo.append(self.run(_Node(fixed, Analysis(), expr, ref)))
        # regions no derivation reached yet: derive from grid points that no case covers
        for ref in self._grid(reference):
            if not _can_explore():
                break
            if self._in_domain(ref) and not any(_node_holds(n, ref) for n in todo):
                try:
                    _check_real(expr, ref, "grid point")
                except GroupCalcError:
                    continue
                todo.append(self.run(_Node(fixed, Analysis(), expr, ref)))
        # families of special values: where the case assumed "e is not a positive integer"
        # (sigma(I_n) singular for n = e), derive the family "e is a positive integer" too
        families = set()
        for parent in list(todo):
            for atom in parent.recorded:
                e = _family(atom)
                if e is None or not _can_explore():
                    continue
                if any(sympy.Contains(e, sympy.S.Naturals) in n.recorded for n in todo):
                    families.add(e)
                    continue
                ref = self._family_point(e, parent)
                if ref is not None:
                    node = self.run(_Node(parent.conds, Analysis(), parent.expr, ref))
                    todo.append(node)
                    if sympy.Contains(e, sympy.S.Naturals) in node.recorded:
                        families.add(e)
        # special values: p = v for every recorded p != v
        self._special_values(todo, families)
        # the lines of special values (p = v, or min_val + max_val = 0): grid points on them
        # that no case covers are derived too
        if len(self.free) > 1:
            for ref in self._line_points(reference):
                if not _can_explore():
                    break
                if self._in_domain(ref) and not any(_node_holds(n, ref) for n in self.nodes):
                    try:
                        _check_real(expr, ref, "grid point")
                    except GroupCalcError:
                        continue
                    node = self.run(_Node(fixed, Analysis(), expr, ref))
                    self._special_values([node], families)
        return root

    def _line_points(self, reference):
        """Grid points moved onto every recorded equality (solved for one parameter)."""
        eqs = []
        for n in self.nodes:
            for t in list(n.conds) + list(n.recorded):
                if isinstance(t, sympy.Eq) and t.free_symbols and t not in eqs:
                    eqs.append(t)
        points = []
        for t in eqs:
            e = t.lhs - t.rhs
            p = sorted(e.free_symbols, key=lambda s: s.name)[-1]
            try:
                sols = [v for v in sympy.solve(e, p) if v.is_real is not False]
            except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
                continue
            for g in self._grid(reference):
                for v in sols:
                    val = v.subs(g)
                    if val.is_number and val.is_real:
                        points.append({**g, p: val})
        return points

    def _special_values(self, todo, families):
        for parent in list(todo):
            keep = []
            for atom in parent.recorded:
                if not _can_explore():
                    keep.append(atom)
                    continue
                if not isinstance(atom, sympy.Ne):
                    keep.append(atom)
                    continue
                p, v = atom.lhs, atom.rhs
                if not (isinstance(p, sympy.Symbol) and v.is_number) or not self._in_domain({p: v}):
                    keep.append(atom)
                    continue
                if sympy.count_ops(v) > MAX_SPECIAL_OPS:
                    keep.append(atom)  # a witness's side condition, not a value worth a derivation
                    continue
                if any(_family_side(t, families) and t.subs(p, v) is sympy.false for t in parent.recorded):
                    continue  # p = v lies on the other side of a family condition: that case covers it
                ref = {k: val for k, val in parent.reference.items() if k != p}
                child = self._special(parent, p, v, ref)
                if child is None:
                    keep.append(atom)
                elif _signature(child.case) == _signature(parent.case.at({p: v})) and not child.unknown:
                    self.nodes.remove(child)  # same answer at p = v: the condition p != v is not needed
                else:
                    keep.append(atom)
            parent.recorded = keep
            parent.case = self._case(parent)

    def _special(self, parent, p, v, ref):
        """Derive sigma at the special value p = v (None when sigma is not a real function there)."""
        expr = parent.expr.subs(p, v)
        if not self._in_domain({**ref, p: v}):
            return None  # the other parameters' reference values do not admit p = v
        try:
            _check_real(expr, ref, "special value")
        except GroupCalcError:
            return None
        key = (tuple(map(str, parent.conds + [sympy.Eq(p, v)])), str(expr))
        known = self._special_nodes.get(key)
        if known is not None and known in self.nodes and _node_holds(known, ref):
            return None  # derived already from another parent, and that derivation covers this point
        node = _Node(parent.conds + [sympy.Eq(p, v)], Analysis(), expr, ref)
        try:
            self._special_nodes[key] = self.run(node)
            self._off_special(node)
            return node
        except GroupCalcError:  # the engine refuses sigma at p = v: leave p != v in the condition
            self.current = None
            return None

    def _grid(self, reference):
        """Deterministic reference points spread over the parameter space (at most 64)."""
        values = [sympy.Rational(v) for v in ("-5/2", "-7/10", "-1/3", "1/3", "7/10", "3/2", "5/2", "4")]
        params = [self.syms[p.name] for p in self.free]
        if len(params) > 1:  # coarser: two values below -1, in (0, 1) and above 1, one in (-1, 0), no symmetric pair there
            values = [sympy.Rational(v) for v in ("-5/2", "-3/2", "-1/2", "1/3", "2/3", "3/2", "5/2")]
        if len(params) > 2:  # a coarse grid in the first two, the others at their references
            params = params[:2]
        grid = [{}]
        for p in params:
            grid = [{**g, p: v} for g in grid for v in values]
        return [{**reference, **g} for g in grid]

    def _off_special(self, node):
        """When a derivation's reference sits on a special value of the other parameters
        (an equality was recorded: hardtanh at max_val = 1 derived at min_val = -1), derive
        at a generic point of the same special value too."""
        eqs = [t for t in node.recorded if isinstance(t, sympy.Eq) and t.free_symbols]
        if not eqs or not _can_explore():
            return
        q = sorted(eqs[0].free_symbols, key=lambda s: s.name)[0]
        for shift in (sympy.Rational(1, 3), sympy.Rational(-1, 3), sympy.Rational(5, 4)):
            ref = {**node.reference, q: node.reference[q] + shift}
            if all(self._in_domain({**ref, t.lhs: t.rhs}) for t in node.conds if isinstance(t, sympy.Eq)):
                try:
                    _check_real(node.expr, ref, "special value")
                    self.run(_Node(node.conds, Analysis(), node.expr, ref))
                except GroupCalcError:
                    self.current = None
                    continue
                return

    def _family_point(self, e, parent):
        """A reference point where ``e`` is a positive integer and the parent's other
        conditions hold (so the family's generic member is derived), or None."""
        others = [t for t in parent.recorded if _family(t) != e]
        fallback = None
        for p in sorted(e.free_symbols, key=lambda s: s.name):
            if any(p in f.free_symbols for f in e.atoms(sympy.Function)):
                continue  # transcendental in p: solving is unbounded (the family stays excluded)
            for k in (2, 3, 5, 7, 4, 1):
                try:
                    sols = sympy.solve(e - k, p)
                except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
                    continue
                for v in sols:
                    ref = {**parent.reference, p: v}
                    if not (v.is_number and v.is_real) or not self._in_domain(ref):
                        continue
                    if all(t.subs(ref) is sympy.true for t in others):
                        return ref
                    fallback = fallback or ref
        return fallback

    def partial_root(self, expr, reference, reason="time"):
        if self.current is None and self.nodes:  # stopped between derivations: those finished stand
            self.nodes[0].analysis.step(f"(The exploration of further parameter cases was stopped: {reason} limit.)")
            self.nodes[0].case = self._case(self.nodes[0])
            return self.nodes[0]
        node = self.current or _Node([], Analysis(), expr, reference)
        node.unknown = True
        node.analysis.step({
            "work": "Work budget spent (counted steps, the same on every machine): the answer is unknown beyond "
                    "the steps above. A larger budget (--work) may settle it.",
            "time": "Wall-clock limit reached: the answer is unknown beyond the steps above. This stop depends on the "
                    "machine's speed and load; a longer --timeout may settle it.",
            "recursion": "Recursion limit reached in sympy: the answer is unknown beyond the steps above.",
        }[reason])
        node.case = self._case(node)
        if node not in self.nodes:
            self.nodes.append(node)
        return self.nodes[0] if self.nodes else node

    # -- turning the derivations into cases --------------------------------------------
    def cases(self, root: _Node) -> list:
        built = []
        for node in self.nodes:
            cond = _clean(self.domain + node.conds + node.recorded)
            if cond is sympy.false:
                continue
            built.append((cond, node.case))
        merged: list = []
        for cond, case in built:
            sig = _signature(case)
            for i, (c2, case2) in enumerate(merged):
                if _signature(case2) == sig:
                    merged[i] = (_or(c2, cond), case2)
                    break
            else:
                merged.append((cond, case))
        return [Case(cond, c.cls, c.scalings, c.group, c.phi_n, c.singular_n, c.status, c.certificate, c.hypotheses, c.expr)
                for cond, c in merged]

    def _case(self, node: _Node) -> Case:
        an = node.analysis
        expr = node.expr
        numeric = [(k, s) for k, s in node.numeric] + [(len(an.certificate), s) for s in an.numeric]
        finished = not node.unknown and an.cls is not None and an.singular_n is not None
        status = "proved"
        if not finished:
            status = "unknown"
        elif numeric:
            status = "verified-numerically"
        elif (an.cls == "nonlinear" and not an.e14_applies) or getattr(an, "open_steps", None):
            status = "unknown"
        cert = list(an.certificate)
        for k, what in dict.fromkeys(numeric):
            if 1 <= k <= len(cert):
                cert[k - 1] += f" [Not symbolic: {what}.]"
            cert.append(f"Settled numerically, not proved (step {k}): {what}.")
        scal = an.scalings
        if an.cls == "constant":
            scal = None
        if not finished and an.cls in (None, "nonlinear"):
            # an unfinished derivation: keep only what was proved (a sound lower bound)
            if scal is None or numeric:
                scal = Scalings("trivial", None, None, a)
            cert.append("Established: G_sigma_n contains the permutation matrices (Lemma E.10)"
                        + (f" and every P D with D diagonal with entries in {scal.describe()}, phi(P D) = P diag(phi(d_i))"
                           if scal.positive != "trivial" or scal.negative is not None else "")
                        + "; everything else is unknown.")
        if scal is not None and (finished or scal.positive != "trivial" or scal.negative is not None):
            ok, msg = _numeric_check(expr, scal, node.reference)
            cert.append(msg)
            if not ok:
                scal = Scalings("trivial", None, None, a)
                status = "unknown"
                cert.append("The numeric check failed, so every claimed scaling other than 1 is withdrawn.")
        group, phi_n = _describe(an.cls if finished else (an.cls if an.cls in ("linear", "affine", "constant") else None),
                                 scal, an.e14_applies and finished and not getattr(an, "open_steps", None))
        return Case(sympy.true, an.cls, scal, group, phi_n, an.singular_n, status, tuple(cert), tuple(an.hypotheses),
                    sympy.sympify(expr))


class _StepLog(list):
    """The oracle's record of numeric steps, each tagged with the certificate step it
    belongs to (the step being worked on: the next one to be written)."""

    def __init__(self, analysis: Analysis, sink: list):
        super().__init__()
        self.analysis = analysis
        self.sink = sink

    def append(self, text):
        super().append(text)
        self.sink.append((len(self.analysis.certificate) + 1, text))


def _family(atom):
    """``e`` when ``atom`` is "e is not a positive integer" in one or more parameters."""
    if isinstance(atom, sympy.Not) and isinstance(atom.args[0], sympy.Contains):
        e, where = atom.args[0].args
        if where == sympy.S.Naturals and e.free_symbols:
            return e
    return None


def _family_side(atom, families) -> bool:
    """Whether ``atom`` is one side of a family condition whose other side was derived."""
    if isinstance(atom, sympy.Contains):
        return atom.args[0] in families
    return _family(atom) in families


def _node_holds(node, ref) -> bool:
    """Whether every condition a derivation recorded holds at the parameter values ``ref``."""
    from ._result import _holds

    return _holds(sympy.And(*node.conds, *node.recorded), ref)


def _can_explore() -> bool:
    """Whether enough work budget is left to derive one more parameter case."""
    left = _budget.remaining()
    return left is None or left > EXPLORE_RESERVE


def _clean(atoms):
    """And of the atoms with equalities substituted into the rest; false if inconsistent."""
    atoms = [t for t in dict.fromkeys(atoms) if t is not sympy.true]
    eqs = {t.lhs: t.rhs for t in atoms if isinstance(t, sympy.Eq) and isinstance(t.lhs, sympy.Symbol)}
    rest = []
    for t in atoms:
        if isinstance(t, sympy.Eq) and t.lhs in eqs:
            continue
        r = t.subs(eqs) if eqs else t
        if r is sympy.false:
            return sympy.false
        if r is not sympy.true:
            rest.append(t)
    return sympy.And(*[sympy.Eq(k, v) for k, v in eqs.items()], *rest)


def _plain_symbols(case: Case, plain: dict) -> Case:
    """Report parameters as the plain real symbols users type (assumptions were internal)."""
    if not plain:
        return case
    sc = case.scalings
    if sc is not None:
        sc = Scalings(sc.positive, None if sc.generator is None else sc.generator.xreplace(plain),
                      None if sc.negative is None else sc.negative.xreplace(plain), sc.phi.xreplace(plain))
    return Case(case.condition.xreplace(plain), case.cls, sc, case.group, case.phi_n, case.singular_n, case.status,
                case.certificate, case.hypotheses, None if case.expr is None else case.expr.xreplace(plain))


def _describe(cls, scal: Scalings | None, e14: bool):
    if cls == "constant":
        return ("GL_n(R): sigma(A x) = sigma(x) for every A; B must fix sigma's constant vector, so phi is not unique", None)
    if cls == "linear":
        return ("GL_n(R)", "phi(A) = A")
    if cls == "affine":
        return ("{A in GL_n(R) : A 1 = 1} (rows sum to 1)", "phi(A) = A")
    if cls is None:
        if scal is None or (scal.positive == "trivial" and scal.negative is None):
            return ("contains the permutation matrices; otherwise unknown", None)
        return (f"contains P D: P a permutation, D diagonal with entries in {scal.describe()}; otherwise unknown", None)
    prefix = "" if e14 else "contains "
    group = f"{prefix}P D: P a permutation, D diagonal with entries in {scal.describe()}"
    if scal.phi == a:
        phi_n = "phi(A) = A"
    elif scal.phi == 1:
        phi_n = "phi(P D) = P"
    else:
        phi_n = f"phi(P D) = P diag(phi(d_1), ..., phi(d_n)), phi(a) = {sympy.sstr(scal.phi)}"
    return group, phi_n


def _signature(case: Case):
    s = case.scalings
    return (case.cls, None if s is None else (s.positive, str(s.generator), str(s.negative), str(sympy.simplify(s.phi))),
            str(case.singular_n), case.status, case.group)


def _normalise(cond, syms):
    """``Ne(c*(p - v), 0)`` -> ``Ne(p, v)`` etc., when the condition has one parameter."""
    if isinstance(cond, (sympy.Ne, sympy.Eq)):
        e = sympy.factor_terms(cond.lhs - cond.rhs)
        if e.is_Mul:  # drop factors that cannot vanish (constants, b**p with b != 0, exp(...))
            e = sympy.Mul(*[f for f in e.args if not (f.is_nonzero or (f.is_Pow and f.base.is_nonzero and f.base.is_number))])
        params = [s for s in e.free_symbols if s != x]
        algebraic = len(params) == 1 and not any(params[0] in f.free_symbols for f in e.atoms(sympy.Function))
        if algebraic and not e.is_polynomial(params[0]):
            # a value entering through roots or quotients (squareplus's b = 0): solve over the
            # reals; transcendental conditions are left as they are (solving them is unbounded)
            p = params[0]
            _budget.charge(5)
            try:
                sols = sympy.solveset(e, p, sympy.S.Reals)
            except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
                return cond
            if not isinstance(sols, sympy.FiniteSet) or not sols or not all(v.is_number for v in sols):
                return cond
            if isinstance(cond, sympy.Ne):
                return sympy.And(*[sympy.Ne(p, v) for v in sols])
            return sympy.Or(*[sympy.Eq(p, v) for v in sols])
        if len(params) == 1 and e.is_polynomial(params[0]):
            p = params[0]
            _budget.charge(5)
            try:  # roots of the polynomial, not solve(): solve simplifies transcendental coefficients without bound
                poly = sympy.Poly(e, p)
                if poly.degree() > 4:
                    return cond
                sols = list(sympy.roots(poly, multiple=True)) if poly.degree() > 1 else [-poly.all_coeffs()[1] / poly.all_coeffs()[0]]
            except Exception:  # noqa: BLE001
                return cond
            if poly.degree() > 1 and len(sols) < poly.degree():
                return cond  # roots() did not find them all: keep the condition as it is
            sols = list(dict.fromkeys(s for s in sols if s.is_real is not False))
            if not sols:
                return sympy.true
            if isinstance(cond, sympy.Ne):
                return sympy.And(*[sympy.Ne(p, s) for s in sols])
            return sympy.Or(*[sympy.Eq(p, s) for s in sols]) if len(sols) > 1 else sympy.Eq(p, sols[0])
    if isinstance(cond, (sympy.StrictGreaterThan, sympy.StrictLessThan)):
        e = cond.lhs - cond.rhs
        params = [s for s in e.free_symbols if s != x]
        if len(params) == 1:
            try:
                r = sympy.solve_univariate_inequality(cond, params[0])
                return r
            except Exception:  # noqa: BLE001
                return cond
    return cond


def _or(c1, c2):
    """``c1 | c2``, dropping ``Ne(p, v)`` from one side when the other side is ``Eq(p, v)``."""
    if c1 == c2:
        return c1
    for eq, other in ((c2, c1), (c1, c2)):
        eqs = [e for e in (eq.args if isinstance(eq, sympy.And) else (eq,)) if isinstance(e, sympy.Eq)]
        rest = [e for e in (eq.args if isinstance(eq, sympy.And) else (eq,)) if not isinstance(e, sympy.Eq)]
        if len(eqs) == 1 and isinstance(other, sympy.And):
            ne = sympy.Ne(eqs[0].lhs, eqs[0].rhs)
            if ne in other.args and all(r in other.args for r in rest):
                return sympy.And(*[t for t in other.args if t != ne])
        if len(eqs) == 1 and other.subs(eqs[0].lhs, eqs[0].rhs) is sympy.true and all(r in getattr(other, "args", ()) for r in rest):
            return other
    return sympy.Or(c1, c2)


def _numeric_check(expr, scal: Scalings, reference) -> tuple[bool, str]:
    """Check sigma(a x) = phi(a) sigma(x) in float64 for sample elements a of S."""
    from activations import lambdify_numpy

    e = expr.subs(reference) if reference else expr
    f = lambdify_numpy(e)
    phi_expr = scal.phi.subs(reference) if reference else scal.phi
    elems = [1.0]
    if scal.positive == "all":
        elems += [2.0, 0.37, 5.5]
    elif scal.positive == "discrete":
        g = float(scal.generator.subs(reference) if reference else scal.generator)
        elems += [g, 1 / g, g * g]
    if scal.negative is not None:
        m = float(scal.negative.subs(reference) if reference else scal.negative)
        elems += [m * t for t in list(elems)]
    rng = np.random.default_rng(0)
    xs = np.concatenate([np.linspace(-6, 6, 241), rng.normal(0, 3, 200)])
    worst = 0.0
    for el in elems:
        lhs = f(el * xs)
        rhs = float(sympy.re(sympy.N(phi_expr.subs(a, sympy.nsimplify(el)), 20))) * f(xs)
        # |y sigma'(y)| at y = a x (central difference) bounds the float64 rounding of sigma(a x)
        # where sigma crosses 0 steeply: for a = e^(8 pi), x = -1, sigma(a x) is ~1e7 instead of 0
        with np.errstate(all="ignore"):
            cond = np.abs(f(el * xs * (1 + 1e-7)) - f(el * xs * (1 - 1e-7))) * 5e6
        scale = 1.0 + np.abs(lhs) + np.abs(rhs) + 1e-6 * np.where(np.isfinite(cond), cond, 0.0)
        ok = np.isfinite(lhs) & np.isfinite(rhs)
        worst = max(worst, float(np.max(np.abs(lhs - rhs)[ok] / scale[ok], initial=0.0)))
    msg = (f"Numeric check: |sigma(a x) - phi(a) sigma(x)| / (1 + |sigma(a x)| + |phi(a) sigma(x)|) <= {worst:.1e} "
           f"for a in {[round(v, 4) for v in elems]} at {len(xs)} points"
           + (f" (parameters {', '.join(f'{k}={v}' for k, v in reference.items())})" if reference else "") + ".")
    return worst <= CHECK_TOL, msg
