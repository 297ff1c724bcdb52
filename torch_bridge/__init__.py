"""torch_bridge: the derived symmetries applied to PyTorch networks.

- :mod:`torch_bridge.models`: reference models of the paper (Myrtle CNN, ResNet20/18, MLPs).
- :mod:`torch_bridge.symmetry`: symmetry specs, the group action, canonical forms, alignment.
- :mod:`torch_bridge.similarity`: group-invariant representation similarity (G-CKA, G-Procrustes).
- :mod:`torch_bridge.experiments`: the paper's sanity, stitching and similarity experiments.
"""

from . import models, similarity, symmetry
from .models import CatalogueActivation, make_activation, mlp, myrtle, resnet18, resnet20
from .similarity import (
    collect_features, g_cka, g_procrustes, laplace_cka, linear_cka, orthogonal_procrustes, rbf_cka, subspace_match,
)
from .symmetry import (
    AlignmentReport, Site, SymmetryElement, SymmetrySpec, SymmetrySpecError, align, canonicalize, symmetry_spec,
    verify_equivalence, weight_distance,
)

__all__ = [
    "models", "symmetry", "similarity",
    "CatalogueActivation", "make_activation", "mlp", "myrtle", "resnet18", "resnet20",
    "AlignmentReport", "Site", "SymmetryElement", "SymmetrySpec", "SymmetrySpecError", "align", "canonicalize",
    "symmetry_spec", "verify_equivalence", "weight_distance",
    "collect_features", "g_cka", "g_procrustes", "laplace_cka", "linear_cka", "orthogonal_procrustes", "rbf_cka",
    "subspace_match",
]
