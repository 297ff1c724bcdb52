"""torch_bridge: the derived symmetries applied to PyTorch networks.

- :mod:`torch_bridge.models`: reference models of the paper (Myrtle CNN, ResNet20/18, MLPs).
- :mod:`torch_bridge.symmetry`: symmetry specs, the group action, canonical forms, alignment.
- :mod:`torch_bridge.similarity`: group-invariant representation similarity (G-CKA, G-Procrustes).
- :mod:`torch_bridge.merge`: interpolation, loss barriers, batch-norm re-estimation, REPAIR, merging.
- :mod:`torch_bridge.experiments`: the paper's sanity, stitching and similarity experiments.
"""

from . import merge, models, similarity, symmetry
from .models import CatalogueActivation, make_activation, mlp, myrtle, resnet18, resnet20
from .similarity import (
    collect_features, g_cka, g_procrustes, laplace_cka, linear_cka, orthogonal_procrustes, rbf_cka, subspace_match,
    minibatch_cka, layer_similarity, gram, hsic, kernel_cka, center_gram, LayerSimilarity, BatchedCKA,
    SimilarityWarning,
)
from .symmetry import (
    AlignmentReport, Site, SymmetryElement, SymmetrySpec, SymmetrySpecError, align, canonicalize, symmetry_spec,
    verify_equivalence, weight_distance,
)

__all__ = [
    "models", "symmetry", "similarity", "merge",
    "CatalogueActivation", "make_activation", "mlp", "myrtle", "resnet18", "resnet20",
    "AlignmentReport", "Site", "SymmetryElement", "SymmetrySpec", "SymmetrySpecError", "align", "canonicalize",
    "symmetry_spec", "verify_equivalence", "weight_distance",
    "collect_features", "g_cka", "g_procrustes", "laplace_cka", "linear_cka", "orthogonal_procrustes", "rbf_cka",
    "subspace_match",
    "minibatch_cka", "layer_similarity", "gram", "hsic", "kernel_cka", "center_gram", "LayerSimilarity",
    "BatchedCKA", "SimilarityWarning",
]
