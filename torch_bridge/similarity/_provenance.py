"""What :func:`collect_features` knows about the tensors it returns (the module they came
from, its activation, their layout), looked up by the measures to warn about a group that
does not match the features and to read a known layout.

Entries are keyed by the tensor object itself (a weak reference: they vanish with it); a
slice, a copy or a numpy conversion of the tensor carries no record.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

__all__ = ["FeatureInfo", "lookup", "register", "same_invariance", "warn_if_group_differs", "detected_invariance"]


@dataclass(frozen=True)
class FeatureInfo:
    """``module``: qualified name in the model; ``source``: the module's type name;
    ``activation``: the catalogue activation of the module (an ``ActivationRef``) or None;
    ``layout``: ``"channels_last"`` when the module is known to put channels last, else None."""

    module: str
    source: str
    activation: object = None
    layout: str | None = None


_RECORDS: dict[int, tuple[weakref.ref, FeatureInfo]] = {}


def register(tensor, info: FeatureInfo) -> None:
    key = id(tensor)
    _RECORDS[key] = (weakref.ref(tensor, lambda _r, k=key: _RECORDS.pop(k, None)), info)


def lookup(obj) -> FeatureInfo | None:
    entry = _RECORDS.get(id(obj))
    if entry is None or entry[0]() is not obj:
        return None
    return entry[1]


def same_invariance(a, b) -> bool:
    """Whether two :class:`Invariance` values describe the same group (labels ignored)."""
    if a.kind != b.kind:
        return False
    if a.kind == "general_linear":
        return True
    if (a.positive, a.signs) != (b.positive, b.signs):
        return False
    return a.step is None or abs(a.step - b.step) <= 1e-9 * abs(a.step)


def detected_invariance(activation, side: str = "post"):
    """The :class:`Invariance` of a detected activation (an ``ActivationRef``), or None when
    the engine cannot give one (then nothing is claimed)."""
    from groupcalc import GroupCalcError

    from ..symmetry import activation_group
    from ._invariance import resolve_group

    try:
        return resolve_group(activation_group(activation), side)
    except (GroupCalcError, ValueError, TypeError, KeyError):
        return None


def warn_if_group_differs(X, Y, inv, side: str, measure: str) -> None:
    """A :class:`SimilarityWarning` when ``X`` or ``Y`` came from an activation module whose
    group (post-activation features) is not the one the measure was asked to ignore."""
    import warnings

    from ._features import SimilarityWarning

    for obj, name in ((X, "X"), (Y, "Y")):
        info = lookup(obj)
        if info is None or info.activation is None:
            continue
        found = detected_invariance(info.activation, "post")
        if found is None or (side == "post" and same_invariance(found, inv)):
            continue
        warnings.warn(
            f"{measure}: {name} holds the outputs of module {info.module!r} ({info.source}, activation "
            f"{info.activation}: {found.describe()}), but the measure was given a group with "
            f"{inv.describe()} (side={side!r}); pass " +
            (f"group={info.activation.name!r}." if not info.activation.params else f"the group of {info.activation}."),
            SimilarityWarning, stacklevel=3,
        )
