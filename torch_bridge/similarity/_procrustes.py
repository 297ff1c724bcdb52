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
from ._provenance import warn_if_group_differs

__all__ = ["g_procrustes", "orthogonal_procrustes", "FORMS"]

#: What the Procrustes functions return: the similarity of the paper, or a distance.
FORMS = ("similarity", "angular", "euclidean")


def check_form(form) -> str:
    if form not in FORMS:
        raise ValueError(f"Argument 'form' must be one of {', '.join(map(repr, FORMS))}, not {form!r}.")
    return form


def _similarity(d2: float, nx: float, ny: float, form: str = "similarity") -> float:
    """The value in the requested ``form`` from ``delta^2 = min |X~ A - Y~|^2`` and the
    squared norms ``nx = |X~|^2``, ``ny = |Y~|^2``.

    * ``"similarity"``: ``1 - delta / (|X~| + |Y~|)``, in [0, 1];
    * ``"euclidean"``: ``delta`` itself, with ``|X~|``, ``|Y~|`` as normalised by the measure;
    * ``"angular"``: ``arccos(<X~ A, Y~> / (|X~| |Y~|))``, in [0, pi/2] for these measures
      (the matched inner product is never negative). It is computed from the residual,
      ``1 - cos = (delta^2 - (|X~| - |Y~|)^2) / (2 |X~| |Y~|)`` and
      ``angle = 2 arcsin(sqrt((1 - cos) / 2))``, which keeps small angles accurate where
      ``arccos`` of a cosine near 1 would lose half the digits.
    """
    d2 = max(d2, 0.0)
    if form == "euclidean":
        return math.sqrt(d2)
    if form == "angular":
        a, b = math.sqrt(nx), math.sqrt(ny)
        if a == 0 or b == 0:
            return math.pi / 2
        one_minus_cos = (d2 - (a - b) ** 2) / (2 * a * b)
        return 2 * math.asin(math.sqrt(min(1.0, max(0.0, one_minus_cos / 2))))
    return float(min(1.0, max(0.0, 1.0 - math.sqrt(d2) / (math.sqrt(nx) + math.sqrt(ny)))))


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
                 dead_rtol: float = DEAD_RTOL, form: str = "similarity", layout=None) -> float:
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
    form : {"similarity", "angular", "euclidean"}
        ``"similarity"`` (default): ``1 - delta / (|X~| + |Y~|)``; ``"euclidean"``: the
        distance ``delta = min_A |X~ A - Y~|`` (Definition 5.2's delta) between the
        normalised features; ``"angular"``: ``arccos(max_A <X~ A, Y~> / (|X~| |Y~|))``, the
        angle between them after the best alignment (netrep's angular form). Both distances
        are 0 exactly when the similarity is 1.
    layout : None, "channels_first" or "channels_last"
        As in :func:`g_cka`.

    Returns
    -------
    float
        Similarity in [0, 1], 1 exactly when ``Y~ = X~ A`` for ``A`` in the group (see
        docs/similarity.md); or the distance asked for by ``form``.
    """
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    form = check_form(form)
    inv = resolve_group(group, side)
    warn_if_group_differs(X, Y, inv, side, "g_procrustes")
    X, Y, ex, ey = prepare(X, Y, min_samples=1, same_positions=True, layout=layout, measure="g_procrustes", inv=inv)
    general = inv.kind == "general_linear"
    Cxy, Cxx, Cyy, sx, sy = channel_covariances(X, Y, center, dead_rtol, with_auto=general)
    if general:
        Wx, Wy = whitener(Cxx), whitener(Cyy)
        M = Wx.T @ Cxy @ Wy
        d2 = _orthogonal_residual(X, Y, sx, sy, Wx, Wy, M)
        return _similarity(d2, float(Wx.shape[1]), float(Wy.shape[1]), form)
    if inv.positive == "trivial" and form == "angular":
        # The angle ignores each side's global scale (and so does the best matching): divide
        # each side by its Frobenius norm, so that a small side keeps its digits.
        ax = sx.norm[sx.live].square().sum().sqrt().expand(int(sx.live.sum())).clone()
        ay = sy.norm[sy.live].square().sum().sqrt().expand(int(sy.live.sum())).clone()
    else:
        # Without scalings the similarity compares the scales of X and Y: both are brought to
        # the larger one's units (the smaller side may then be negligible, as it is).
        # (Groups that scale channels come with one exponent per channel and take no reference.)
        ref = max(ex, ey) if inv.positive == "trivial" else None
        ax = canonical_scale(sx.norm, inv, ex, ref)[sx.live]
        ay = canonical_scale(sy.norm, inv, ey, ref)[sy.live]
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
    value = _similarity(matched + unmatched_x + unmatched_y, nx, ny, form)
    if form == "euclidean" and inv.positive == "trivial":
        # Without scalings delta is in the features' units, and they were stored as true * 2**-ref.
        try:
            value = math.ldexp(value, max(ex, ey))
        except OverflowError:
            raise ValueError("g_procrustes: the Euclidean distance overflows float64; rescale the features.") from None
    return value


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


def orthogonal_procrustes(X, Y, *, center: bool = False, form: str = "similarity", layout=None) -> float:
    """Orthogonal Procrustes similarity or distance over channels (Ding et al. 2021;
    appendix D.7.1; Williams et al. 2021).

    Both arrays are divided by their Frobenius norm; ``M`` is the cross-correlation of
    eq. D.2 and ``delta^2 = 2 - 2 |M|_*`` (nuclear norm). Invariant under orthogonal maps
    of the channels (the same at every position) and isotropic scaling; similarity 1 (a
    distance 0) certifies ``Y = s X Q`` (with ``center``: up to a shift too).

    Parameters
    ----------
    center : bool
        Subtract channel means first (netrep centres; Ding et al.'s Procrustes does not).
    form : {"similarity", "angular", "euclidean"}
        ``"similarity"`` (default): ``1 - delta / 2`` in [0, 1]. ``"angular"``: the angle
        ``arccos |M|_*`` in [0, pi/2], the metric of Williams et al. 2021 (netrep's
        ``LinearMetric(alpha=1, score_method="angular")``, which also centres: use
        ``center=True`` to compare). ``"euclidean"``: ``delta = sqrt(2 - 2 |M|_*)`` in
        [0, sqrt 2], the Procrustes distance between the Frobenius-normalised features.
    layout : None, "channels_first" or "channels_last"
        As in :func:`g_cka`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(30, 4))
    >>> Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
    >>> orthogonal_procrustes(X, 2 * X @ Q, form="angular") < 1e-7
    True
    """
    form = check_form(form)
    X, Y, _, _ = prepare(X, Y, min_samples=1, same_positions=True, layout=layout, measure="orthogonal_procrustes")
    Cxy, _, _, sx, sy = channel_covariances(X, Y, center, 0.0, with_auto=False)
    fx = float(sx.norm[sx.live].square().sum().sqrt())
    fy = float(sy.norm[sy.live].square().sum().sqrt())
    Ax = torch.eye(int(sx.live.sum()), dtype=torch.float64, device=X.device) / fx
    Ay = torch.eye(int(sy.live.sum()), dtype=torch.float64, device=Y.device) / fy
    d2 = _orthogonal_residual(X, Y, sx, sy, Ax, Ay, Cxy / (fx * fy))
    return _similarity(d2, 1.0, 1.0, form)
