"""groupcalc: derive the intertwiner group of any activation function.

The engine (:func:`derive`) returns immutable results (:class:`Derivation`, :class:`Case`,
:class:`Scalings`); :class:`IntertwinerGroup` is the numeric group one computes with;
:mod:`groupcalc.testing` has hypothesis strategies and checkers for users.

>>> import groupcalc
>>> groupcalc.derive("relu").generic.group
'P D: P a permutation, D diagonal with entries in (0, oo)'
"""

from ._check import CheckReport, ScalingSearch, check, search_scalings
from ._derive import derive, resolve
from ._groups import IntertwinerGroup, group
from ._result import Case, Derivation, GroupCalcError, Scalings, a

__all__ = ["derive", "resolve", "group", "check", "search_scalings", "CheckReport", "ScalingSearch", "IntertwinerGroup", "Case", "Derivation", "GroupCalcError", "Scalings", "a"]
