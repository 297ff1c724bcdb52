"""Weight-space symmetries of real PyTorch networks, transformers included.

:func:`symmetry_spec` captures a model with ``torch.export``, applies the layer rules of
:mod:`torch_bridge.symmetry.rules` and returns a :class:`SymmetrySpec`: its sites (unit spaces
with a group: monomial, orthogonal, general linear, scalar, block-diagonal per head), the
bindings of every parameter to them, sampling and the action on models. The site groups
(:class:`GeneralLinear`, :class:`Orthogonal`, :class:`Monomial` over a set of scalings such as
:data:`POSITIVE`, :class:`Scalar`, :class:`ComplexDiagonal`, :class:`Block`) and their elements
(:class:`MonomialElement`, :class:`DenseElement`, :class:`ScalarElement`, :class:`BlockElement`,
:class:`ComplexDiagonalElement`) are immutable values;
:func:`canonicalize` and :func:`align` remove the symmetry from a model or between two.

>>> import torch
>>> from torch_bridge.models import mlp
>>> from torch_bridge.symmetry import symmetry_spec, verify_equivalence
>>> net = mlp([4, 8, 3], activation="relu")
>>> spec = symmetry_spec(net, torch.zeros(1, 4))
>>> g = spec.sample(generator=torch.Generator().manual_seed(0))
>>> verify_equivalence(net, spec.act(g, net), torch.randn(5, 4)) < 1e-5
True
"""

from ._activations import ActivationRef, activation_group, function_activation, module_activation
from ._capture import SymmetrySpecError
from ._elements import BlockElement, ComplexDiagonalElement, DenseElement, Element, MonomialElement, ScalarElement
from ._site_groups import (GL, ONE, POSITIVE, R_NONZERO, SIGNS, Block, ComplexDiagonal, GeneralLinear, Group, Meet, Monomial,
                           Orthogonal, Scalar, ScaledPermutation)
from ._spec import Binding, Site, SymmetryElement, SymmetrySpec, symmetry_spec, verify_equivalence
from ._transforms import fold_norm_gains

__all__ = [
    "symmetry_spec", "SymmetrySpec", "Site", "Binding", "SymmetryElement", "SymmetrySpecError", "verify_equivalence",
    "fold_norm_gains",
    "Group", "GeneralLinear", "GL", "Orthogonal", "Monomial", "ScaledPermutation", "Scalar", "Block", "Meet",
    "ComplexDiagonal", "R_NONZERO", "POSITIVE", "SIGNS", "ONE",
    "Element", "MonomialElement", "DenseElement", "ScalarElement", "BlockElement", "ComplexDiagonalElement",
    "canonicalize", "canonical_scalings", "canonical_permutations",
    "align", "AlignmentReport", "weight_distance", "UnderdeterminedAlignmentWarning",
    "export_alignment", "apply_to_state_dict", "AxisMap", "ParamMap", "DroppedScalingsWarning",
    "ActivationRef", "module_activation", "function_activation", "activation_group",
]

_LAZY = {"align": "_align", "AlignmentReport": "_align", "weight_distance": "_align",
         "UnderdeterminedAlignmentWarning": "_align_data",
         "export_alignment": "_export", "apply_to_state_dict": "_export", "AxisMap": "_export", "ParamMap": "_export",
         "DroppedScalingsWarning": "_export",
         "canonicalize": "_canonical", "canonical_scalings": "_canonical", "canonical_permutations": "_canonical"}


def __getattr__(name):
    # canonical forms and alignment load on first use (they need scipy and the whole spec)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
