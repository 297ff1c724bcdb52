"""Representation similarity invariant to intertwiner groups (section 5 of Godfrey et al.).

Group-aware measures follow the group of an activation: positive scalings are removed by
normalising channels, sign flips are ignored where the group holds -1, and channels are
matched by permutation; general-linear groups whiten the channels instead.

* :func:`g_cka` -- CKA with the max kernel (Definition 5.3, appendix D.7.2);
* :func:`laplace_cka` -- CKA with the positive definite l1 (Laplace) kernel of eq. (5.6);
* :func:`g_procrustes` -- Definition 5.2 with the cross-correlation of eq. (D.2);
* baselines :func:`linear_cka`, :func:`rbf_cka`, :func:`orthogonal_procrustes` and
  :func:`subspace_match` (Wang et al. 2018);
* :func:`collect_features` gathers layer outputs of a torch model with forward hooks.
"""

from ._collect import collect_features
from ._invariance import Invariance, resolve_group
from ._cka import g_cka, laplace_cka, linear_cka, rbf_cka
from ._procrustes import g_procrustes, orthogonal_procrustes
from ._subspace import subspace_match

__all__ = [
    "Invariance",
    "collect_features",
    "g_cka",
    "g_procrustes",
    "laplace_cka",
    "linear_cka",
    "orthogonal_procrustes",
    "rbf_cka",
    "resolve_group",
    "subspace_match",
]
