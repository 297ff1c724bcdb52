"""REPAIR (Jordan et al. 2022): restore the per-channel statistics of an interpolated network.

Interpolating two aligned networks shrinks the variance of their hidden units ("variance
collapse"): the units of the two endpoints are not perfectly correlated, so their average
varies less than either. REPAIR measures, for every hidden channel c, the mean and standard
deviation of the pre-activations of both endpoints, :math:`(\\mu_a, \\sigma_a)` and
:math:`(\\mu_b, \\sigma_b)`, and makes the merged network's channel have
:math:`\\mu_t = (1-\\alpha)\\mu_a + \\alpha\\mu_b`, :math:`\\sigma_t = (1-\\alpha)\\sigma_a + \\alpha\\sigma_b`
with the affine map :math:`z \\mapsto (z - \\mu_m)\\,\\sigma_t / \\sigma_m + \\mu_t`, folded into the layer
producing z: rows of the weight times :math:`s = \\sigma_t/\\sigma_m`, bias
:math:`s\\,(b - \\mu_m) + \\mu_t`. For a batch norm the same correction is the re-estimation of its
running statistics (docs/merging.md derives both).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ._interpolate import _check_alpha, _check_same, set_from_data
from ._stats import (BATCH_NORMS, ChannelStats, _Stop, as_passes, channel_dim, eval_mode, execution_order, first_inputs,
                     producer_layout, run)

__all__ = ["repair", "RepairWarning", "repair_targets"]


class RepairWarning(UserWarning):
    """A correction REPAIR could only apply in part (a layer without a bias cannot be shifted)."""


def repair_targets(model: nn.Module, example_inputs) -> list:
    """The layers REPAIR corrects, in the order they run: every batch norm (with running
    statistics), and every linear or convolution layer (Hugging Face's ``Conv1D`` included)
    whose output is neither the model's output nor the direct input of a batch norm (which
    re-normalises it anyway)."""
    out = []
    def select(m):
        return isinstance(m, BATCH_NORMS) or producer_layout(m) is not None

    for name, m, is_output, feeds_bn in execution_order(model, example_inputs, select):
        if isinstance(m, BATCH_NORMS):
            if m.track_running_stats:
                out.append(name)
        elif not is_output and not feeds_bn:
            out.append(name)
    return out


def _output_stats(model, names, data):
    """name -> ChannelStats of the named modules' outputs on ``data`` (eval mode, one pass)."""
    stats = {n: ChannelStats() for n in names}
    hooks = []
    for n in names:
        def hook(mod, _i, y, st=stats[n]):
            st.update(y, channel_dim(mod, y))
        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    try:
        with eval_mode(model):
            run(model, data)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _one_output_stats(model, name, data):
    st = ChannelStats()

    def hook(mod, _i, y):
        st.update(y, channel_dim(mod, y))
        raise _Stop

    h = model.get_submodule(name).register_forward_hook(hook)
    try:
        with eval_mode(model):
            run(model, data, until_stop=True)
    finally:
        h.remove()
    return st


def repair(model_a: nn.Module, model_b: nn.Module, merged: nn.Module, data, *, alpha: float = 0.5,
           layers=None, eps: float = 1e-5) -> nn.Module:
    """A copy of ``merged`` whose hidden channels have the interpolated statistics of the endpoints.

    For every target layer, in the order the network runs it (each correction measured with
    the earlier ones in place, the model in eval mode), the merged network's output channel
    with mean :math:`\\mu_m` and standard deviation :math:`\\sigma_m` on ``data`` is mapped to
    mean :math:`(1-\\alpha)\\mu_a + \\alpha\\mu_b` and standard deviation
    :math:`(1-\\alpha)\\sigma_a + \\alpha\\sigma_b`, the endpoints' statistics of the same
    channel: folded into a linear / convolution layer (weight rows scaled by
    :math:`s = \\sigma_t/\\sqrt{\\sigma_m^2 + \\epsilon}`, bias :math:`s(b - \\mu_m) + \\mu_t`); for a batch
    norm by resetting its running statistics to those of its inputs (its outputs then have
    mean :math:`\\beta` and standard deviation :math:`|\\gamma|` of the merged weights, which are
    the interpolations of the endpoints' when those are calibrated on the same data and
    their :math:`\\gamma` agree in sign).

    Parameters
    ----------
    model_a, model_b : nn.Module
        The endpoints, ``model_b`` aligned to ``model_a`` (the channel statistics are matched
        channel by channel).
    merged : nn.Module
        The interpolated model (e.g. :func:`interpolate` ``(model_a, model_b, alpha)``).
    data : DataLoader or iterable of (x, y) batches
        The data the statistics are measured on.
    alpha : float
        The interpolation weight of ``model_b`` (0.5: the midpoint).
    layers : list of str, optional
        Module names to correct (default: :func:`repair_targets`).
    eps : float
        Added to :math:`\\sigma_m^2` (as in batch norm), so a constant channel is only shifted.

    Returns
    -------
    nn.Module
        The repaired copy (``merged`` is untouched). A linear layer without a bias only gets
        its scale corrected (a :class:`RepairWarning` says so).
    """
    alpha = _check_alpha(alpha)
    if not eps >= 0:
        raise ValueError(f"Argument 'eps' must be a non-negative number, not {eps!r}.")
    _check_same([model_a, model_b, merged], ("model_a", "model_b", "merged"))
    data = as_passes(data)
    new = copy.deepcopy(merged)
    targets = repair_targets(new, first_inputs(data, new)) if layers is None else list(layers)
    mods = dict(new.named_modules())
    for n in targets:
        if n not in mods:
            raise ValueError(f"Argument 'layers' names {n!r}, which is not a module of the model.")
        if not isinstance(mods[n], BATCH_NORMS) and producer_layout(mods[n]) is None:
            raise ValueError(f"Argument 'layers': {n!r} is a {type(mods[n]).__name__}; REPAIR corrects linear, "
                             "convolution and batch-norm layers.")
    producers = [n for n in targets if not isinstance(mods[n], BATCH_NORMS)]
    sa = _output_stats(model_a, producers, data) if producers else {}
    sb = _output_stats(model_b, producers, data) if producers else {}
    for n in targets:
        m = mods[n]
        if isinstance(m, BATCH_NORMS):
            set_from_data(new, n, data)
            continue
        sm = _one_output_stats(new, n, data)
        mu_t = (1 - alpha) * sa[n].mean + alpha * sb[n].mean
        sd_t = (1 - alpha) * sa[n].std() + alpha * sb[n].std()
        s = sd_t / (sm.var() + eps).sqrt()
        _fold(n, m, s, mu_t - s * sm.mean)
    return new


def _fold(name, m, s, shift):
    """Make ``m``'s output ``s * y + shift`` per output channel (in place)."""
    w = m.weight
    dim = producer_layout(m)[1]
    shape = [1] * w.dim()
    shape[dim] = -1
    with torch.no_grad():
        w.mul_(s.to(w).view(shape))
        if m.bias is not None:
            m.bias.mul_(s.to(m.bias)).add_(shift.to(m.bias))
        elif bool((shift.abs() > 1e-12).any()):
            warnings.warn(f"repair: layer {name!r} has no bias; only the scale of its channels was corrected, "
                          "not their means.", RepairWarning, stacklevel=3)
