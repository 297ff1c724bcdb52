"""Merging and comparing trained models: interpolation, barriers, batch-norm re-estimation,
REPAIR and the merge of many models, on top of :func:`torch_bridge.symmetry.align`.

* :func:`interpolate` -- the model :math:`(1-\\alpha)\\theta_a + \\alpha\\theta_b`.
* :func:`barrier` -- loss and accuracy along that path, optionally after aligning ``model_b``
  to ``model_a`` modulo the architecture's full symmetry group and with REPAIR
  (a :class:`BarrierResult`).
* :func:`reestimate_batchnorm` -- batch-norm running statistics recomputed on data.
* :func:`repair` -- REPAIR (Jordan et al. 2022): the merged network's channel statistics reset
  to the interpolation of the endpoints'.
* :func:`merge_many` -- align every model to a reference, average, repeat (MergeMany).

Every function returns new models (its arguments are untouched), on the models' device and
dtype; ``data`` is a DataLoader or any iterable of ``(x, y)`` batches.

>>> import torch
>>> from torch_bridge.models import mlp
>>> from torch_bridge.merge import barrier
>>> a, b = mlp([4, 8, 3], activation="tanh"), mlp([4, 8, 3], activation="tanh")
>>> data = [(torch.randn(32, 4), torch.randint(0, 3, (32,)))]
>>> r = barrier(a, b, data, alphas=5, align="weights")
>>> len(r.loss), r.barrier >= 0
(5, True)
"""

from ._barrier import BarrierResult, align_models, barrier, evaluate
from ._interpolate import average, interpolate, reestimate_batchnorm
from ._many import merge_many
from ._repair import RepairWarning, repair, repair_targets

__all__ = [
    "interpolate", "average", "reestimate_batchnorm", "repair", "repair_targets", "RepairWarning",
    "barrier", "BarrierResult", "evaluate", "align_models", "merge_many",
]
