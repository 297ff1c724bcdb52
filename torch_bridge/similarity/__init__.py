"""Representation similarity invariant to intertwiner groups (section 5 of Godfrey et al.).

Group-aware measures follow the group of an activation: positive scalings are removed by
normalising channels, sign flips are ignored where the group holds -1, and channels are
matched by permutation; general-linear groups whiten the channels instead.

* :func:`g_cka` -- CKA with the max kernel (Definition 5.3, appendix D.7.2);
* :func:`laplace_cka` -- CKA with the positive definite l1 (Laplace) kernel of eq. (5.6);
* :func:`g_procrustes` -- Definition 5.2 with the cross-correlation of eq. (D.2);
* baselines :func:`linear_cka`, :func:`rbf_cka`, :func:`orthogonal_procrustes` and
  :func:`subspace_match` (Wang et al. 2018);
* :func:`collect_features` gathers layer outputs of a torch model with forward hooks;
* :func:`minibatch_cka` (CKA and G-CKA averaged over minibatches, Nguyen et al. 2021) and
  :func:`layer_similarity` (the layer x layer matrix of two models, with a heatmap);
* the kernel API: :func:`gram`, :func:`center_gram`, :func:`hsic`, :func:`kernel_cka`.

Every CKA takes ``estimator="unbiased"`` (default) or ``"biased"``; every measure takes
``layout=`` (channels at axis 1 by default); the Procrustes measures take
``form="similarity" | "angular" | "euclidean"``.
"""

from ._collect import collect_features
from ._features import SimilarityWarning
from ._invariance import Invariance, resolve_group
from ._cka import g_cka, laplace_cka, linear_cka, rbf_cka
from ._procrustes import g_procrustes, orthogonal_procrustes
from ._subspace import subspace_match
from ._gram import center_gram, gram, hsic, kernel_cka
from ._batched import BatchedCKA, minibatch_cka
from ._layers import LayerSimilarity, layer_similarity

__all__ = [
    "BatchedCKA",
    "Invariance",
    "LayerSimilarity",
    "SimilarityWarning",
    "center_gram",
    "collect_features",
    "g_cka",
    "g_procrustes",
    "gram",
    "hsic",
    "kernel_cka",
    "laplace_cka",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "orthogonal_procrustes",
    "rbf_cka",
    "resolve_group",
    "subspace_match",
]
