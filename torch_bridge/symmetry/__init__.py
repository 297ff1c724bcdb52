"""Weight-space symmetries of real PyTorch networks.

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
from ._align import AlignmentReport, align, weight_distance
from ._canonical import canonical_permutations, canonical_scalings, canonicalize
from ._graph import SymmetrySpecError
from ._spec import Site, SymmetryElement, SymmetrySpec, symmetry_spec, verify_equivalence

__all__ = [
    "symmetry_spec", "SymmetrySpec", "Site", "SymmetryElement", "SymmetrySpecError", "verify_equivalence",
    "canonicalize", "canonical_scalings", "canonical_permutations",
    "align", "AlignmentReport", "weight_distance",
    "ActivationRef", "module_activation", "function_activation", "activation_group",
]
