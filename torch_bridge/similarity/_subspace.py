"""Subspace match (Wang et al. 2018), the baseline criticised in seed note 002."""

from __future__ import annotations

import numpy as np
import torch

from ._features import DEAD_RTOL
from ._invariance import Invariance
from ._prep import channel_covariances, check_tol, prepare

__all__ = ["subspace_match"]


def subspace_match(X, Y, epsilon: float = 0.5, *, center: bool = False, return_match: bool = False,
                   dead_rtol: float = DEAD_RTOL, layout=None):
    """Maximum epsilon-approximate subspace match (Wang et al. 2018, Algorithm 1).

    Each channel is a neuron whose activation vector runs over samples (and positions).
    Starting from all live neurons, repeatedly drop every neuron of X whose activation
    vector is farther than ``epsilon`` times its length from the span of the remaining
    neurons of Y, and vice versa, until nothing changes. The result is the largest match
    ``(X*, Y*)``; the value is ``(|X*| + |Y*|) / (|X| + |Y|)`` over live neurons.

    Parameters
    ----------
    epsilon : float in [0, 1)
        Relative distance allowed. Distances come from the float64 Gram matrix of all
        activation vectors (one streamed pass, memory (C + C')^2), which resolves relative
        distances down to about 1e-7: test exact matches with ``epsilon=1e-6``.
    return_match : bool
        Also return the indices (into the channels of X and of Y) of the matched neurons.
    layout : None, "channels_first" or "channels_last"
        As in :func:`g_cka`.
    """
    epsilon = check_tol(epsilon, "epsilon")
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    # A match compares spans of neurons, which no neuron's own scale changes: each channel is
    # stored with its own power of two (exact), as for groups with per-channel scalings.
    X, Y, _, _ = prepare(X, Y, min_samples=1, same_positions=True, layout=layout, measure="subspace_match",
                         inv=Invariance("monomial", "all"))
    # One Gram matrix of all activation vectors of both layers carries every projection.
    Cxy, Cxx, Cyy, sx, sy = channel_covariances(X, Y, center, dead_rtol, with_auto=True)
    cx, cy = Cxx.shape[0], Cyy.shape[0]
    G = torch.zeros((cx + cy, cx + cy), dtype=torch.float64)
    G[:cx, :cx], G[cx:, cx:] = Cxx.cpu(), Cyy.cpu()
    G[:cx, cx:], G[cx:, :cx] = Cxy.cpu(), Cxy.cpu().T
    G = G.numpy()

    def within(targets, basis):
        """Which targets lie within epsilon (relative) of span(basis)."""
        if len(basis) == 0:
            return np.zeros(len(targets), dtype=bool)
        Gb = G[np.ix_(basis, basis)]
        vals, vecs = np.linalg.eigh(Gb)
        keep = vals > 1e-12 * max(vals.max(), 0.0)
        Bt = G[np.ix_(targets, basis)] @ vecs[:, keep]
        proj = (Bt**2 / vals[keep]).sum(axis=1)
        norms = G[targets, targets]
        dist2 = np.maximum(norms - proj, 0.0)
        return dist2 <= (epsilon**2) * norms * (1 + 1e-12)

    xs = np.arange(cx)
    ys = np.arange(cx, cx + cy)
    while True:
        nx_ = xs[within(xs, ys)] if len(xs) else xs
        ny_ = ys[within(ys, nx_)] if len(ys) else ys
        if len(nx_) == len(xs) and len(ny_) == len(ys):
            break
        xs, ys = nx_, ny_
    value = (len(xs) + len(ys)) / (cx + cy)
    if not return_match:
        return float(value)
    live_x = torch.nonzero(sx.live).flatten().cpu().numpy()
    live_y = torch.nonzero(sy.live).flatten().cpu().numpy()
    return float(value), live_x[xs].tolist(), live_y[ys - cx].tolist()
