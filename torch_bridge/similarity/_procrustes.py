"""Procrustes measures over channels: g_procrustes (linear assignment after the group's
normalisation, Definition 5.2) and orthogonal_procrustes (nuclear norm)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._features import DEAD_RTOL, canonical_scale, row_batches
from ._invariance import resolve_group
from ._prep import channel_covariances, check_tol, prepare, whitener

__all__ = ["g_procrustes", "orthogonal_procrustes"]


def _similarity(d2: float, nx: float, ny: float) -> float:
    """``1 - delta / (|X~| + |Y~|)`` from ``delta^2`` and the squared norms."""
    return float(min(1.0, max(0.0, 1.0 - math.sqrt(max(d2, 0.0)) / (math.sqrt(nx) + math.sqrt(ny)))))


def _orthogonal_residual(X, Y, sx, sy, Ax, Ay, M) -> float:
    """``min_Q |X~ Q - Y~|^2`` over orthogonal ``Q``, summed directly in float64.

    ``X~ = (X - mean_x) Ax`` and ``Y~ = (Y - mean_y) Ay`` on the live channels (``Ax``, ``Ay``
    the per-measure maps: a scale or a whitener), ``M = X~^T Y~``. The optimal ``Q = U V^T``
    from the SVD of ``M`` (zero-padded to square, so that unequal widths compare as in
    orthogonal Procrustes). Computing ``|X~|^2 + |Y~|^2 - 2 |M|_*`` instead cancels to rounding
    noise for related features, and its square root magnifies that noise to ~1e-8.
    """
    kx, ky = M.shape
    k = max(kx, ky)
    Mp = torch.zeros((k, k), dtype=torch.float64, device=M.device)
    Mp[:kx, :ky] = M
    U, _, Vh = torch.linalg.svd(Mp)
    Q = (U @ Vh)[:kx, :]  # X~ padded with zero channels only uses the first kx rows
    lx, ly = sx.live, sy.live
    mx, my = sx.mean[lx][None, :, None], sy.mean[ly][None, :, None]
    total = 0.0
    n, _, p = X.shape
    for sl in row_batches(n, (X.shape[1] + Y.shape[1]) * p):
        xb = (X[sl][:, lx].to(torch.float64) - mx).permute(0, 2, 1).reshape(-1, int(lx.sum())) @ Ax
        yb = (Y[sl][:, ly].to(torch.float64) - my).permute(0, 2, 1).reshape(-1, int(ly.sum())) @ Ay
        r = xb @ Q  # compared with Y~ padded with zero channels to width k
        total += float((r[:, :ky] - yb).square().sum() + r[:, ky:].square().sum())
    return total


def g_procrustes(X, Y, group="relu", *, side: str = "post", center: bool = False,
                 dead_rtol: float = DEAD_RTOL) -> float:
    """G-Procrustes (Definition 5.2, eq. D.2): channel normalisation, then the best
    matching of channels by linear assignment.

    With ``X~``, ``Y~`` the channels divided by their canonical scale (their norm over
    samples and positions for positive scalings) and ``M = X~^T Y~`` the ``C x C'``
    cross-correlation summed over samples and positions (eq. D.2),
    ``delta^2 = |X~|^2 + |Y~|^2 - 2 max_P tr(M P)`` and the value is
    ``1 - delta / (|X~| + |Y~|)``, which is Definition 5.2's ``1 - delta / (2 sqrt(d))`` when
    all d channels are live and normalised. When the group holds -1 the matching uses
    ``|M|`` (each matched pair takes its best sign); for a general-linear group the channels
    are whitened and ``max tr(M Q)`` over orthogonal ``Q`` is the nuclear norm.

    Parameters
    ----------
    X, Y : array or tensor, shape (N, C) or (N, C, H, W)
        Same samples; same spatial shape (positions are paired); channel counts may differ
        (unmatched channels count as distance).
    group, side, dead_rtol
        As in :func:`g_cka`.
    center : bool
        Subtract each channel's mean first (Definition 5.2 does not; with it, shifts
        ``1 v^T`` are ignored too).

    Returns
    -------
    float in [0, 1]
        1 exactly when ``Y~ = X~ A`` for ``A`` in the group (see docs/similarity.md).
    """
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    X, Y = prepare(X, Y, min_samples=1, same_positions=True, measure="g_procrustes")
    inv = resolve_group(group, side)
    general = inv.kind == "general_linear"
    Cxy, Cxx, Cyy, sx, sy = channel_covariances(X, Y, center, dead_rtol, with_auto=general)
    if general:
        Wx, Wy = whitener(Cxx), whitener(Cyy)
        M = Wx.T @ Cxy @ Wy
        d2 = _orthogonal_residual(X, Y, sx, sy, Wx, Wy, M)
        return _similarity(d2, float(Wx.shape[1]), float(Wy.shape[1]))
    ax = canonical_scale(sx.norm, inv)[sx.live]
    ay = canonical_scale(sy.norm, inv)[sy.live]
    M = (Cxy / ax[:, None] / ay[None, :]).cpu().numpy()
    nx = float(((sx.norm[sx.live] / ax) ** 2).sum())
    ny = float(((sy.norm[sy.live] / ay) ** 2).sum())
    gain = np.abs(M) if inv.signs else M
    rows, cols = linear_sum_assignment(gain, maximize=True)
    # delta^2 from the norms and the matched correlations cancels to rounding noise when the
    # features are related (and its square root magnifies that noise); so the matched part is
    # summed again directly as sum |x~_c - s y~_c'|^2, which is exactly 0 for related features.
    signs = np.where(M[rows, cols] < 0, -1.0, 1.0) if inv.signs else np.ones(len(rows))
    matched = _matched_residual(X, Y, sx, sy, ax, ay, rows, cols, signs)
    rest_x = np.setdiff1d(np.arange(M.shape[0]), rows)
    rest_y = np.setdiff1d(np.arange(M.shape[1]), cols)
    unmatched_x = float(((sx.norm[sx.live] / ax).cpu().numpy()[rest_x] ** 2).sum())
    unmatched_y = float(((sy.norm[sy.live] / ay).cpu().numpy()[rest_y] ** 2).sum())
    return _similarity(matched + unmatched_x + unmatched_y, nx, ny)


def _matched_residual(X, Y, sx, sy, ax, ay, rows, cols, signs) -> float:
    """``sum_{n,p} sum_k (x~_{rows_k} - signs_k y~_{cols_k})^2`` streamed over samples (float64)."""
    ix = torch.nonzero(sx.live).flatten()[torch.as_tensor(rows, device=X.device)]
    iy = torch.nonzero(sy.live).flatten()[torch.as_tensor(cols, device=Y.device)]
    mx = sx.mean[ix][None, :, None]
    my = sy.mean[iy][None, :, None]
    fx = ax[torch.as_tensor(rows, device=X.device)][None, :, None]
    fy = (ay[torch.as_tensor(cols, device=Y.device)] / torch.as_tensor(signs, device=Y.device))[None, :, None]
    total = 0.0
    n, _, p = X.shape
    for sl in row_batches(n, (X.shape[1] + Y.shape[1]) * p):
        xb = (X[sl][:, ix].to(torch.float64) - mx) / fx
        yb = (Y[sl][:, iy].to(torch.float64) - my) / fy
        total += float((xb - yb).square().sum())
    return total


def orthogonal_procrustes(X, Y, *, center: bool = False) -> float:
    """Orthogonal Procrustes similarity over channels (Ding et al. 2021; appendix D.7.1).

    Both arrays are divided by their Frobenius norm; ``M`` is the cross-correlation of
    eq. D.2 and ``delta^2 = 2 - 2 |M|_*`` (nuclear norm); the value is ``1 - delta / 2``.
    Invariant under orthogonal maps of the channels (the same at every position) and
    isotropic scaling; 1 certifies ``Y = s X Q`` (with ``center``: up to a shift too).
    """
    X, Y = prepare(X, Y, min_samples=1, same_positions=True, measure="orthogonal_procrustes")
    Cxy, _, _, sx, sy = channel_covariances(X, Y, center, 0.0, with_auto=False)
    fx = float(sx.norm[sx.live].square().sum().sqrt())
    fy = float(sy.norm[sy.live].square().sum().sqrt())
    Ax = torch.eye(int(sx.live.sum()), dtype=torch.float64, device=X.device) / fx
    Ay = torch.eye(int(sy.live.sum()), dtype=torch.float64, device=Y.device) / fy
    d2 = _orthogonal_residual(X, Y, sx, sy, Ax, Ay, Cxy / (fx * fy))
    return _similarity(d2, 1.0, 1.0)
