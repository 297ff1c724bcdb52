"""The CKA family: g_cka (max kernel), laplace_cka (l1 kernel), linear_cka and rbf_cka,
all with the unbiased HSIC estimator."""

from __future__ import annotations

import torch

from ._features import DEAD_RTOL, compute_dtype, row_batches
from ._hsic import cka_from_grams, cka_value
from ._invariance import Invariance, resolve_group
from ._kernels import laplace_distances, linear_gram, max_gram, sq_distances
from ._prep import check_positive, check_tol, flat, median, normalised_channels, prepare, whitened_features

__all__ = ["g_cka", "laplace_cka", "linear_cka", "rbf_cka"]


def _linear_cka_features(Fx: torch.Tensor, Fy: torch.Tensor) -> float:
    """Unbiased linear CKA of ``(N, D)`` feature matrices.

    When both widths are at most N the Gram matrices are never formed: the HSIC terms are
    accumulated over row batches in feature space (``||X^T Y||_F^2`` and friends, float64).
    Otherwise the N x N Gram matrices are built with one matrix product each.
    """
    n = Fx.shape[0]
    dx, dy = Fx.shape[1], Fy.shape[1]
    if max(dx, dy) > n:
        return cka_from_grams(linear_gram(Fx), linear_gram(Fy), "linear_cka")
    f64 = torch.float64
    dev = Fx.device
    acc = {k: torch.zeros(s, dtype=f64, device=dev) for k, s in
           [("xy", (dx, dy)), ("xx", (dx, dx)), ("yy", (dy, dy)), ("sx", (dx,)), ("sy", (dy,)),
            ("xb", (dx,)), ("ya", (dy,)), ("xa", (dx,)), ("yb", (dy,))]}
    sc = {"ab": 0.0, "aa": 0.0, "bb": 0.0, "a": 0.0, "b": 0.0}
    for sl in row_batches(n, dx + dy):
        x, y = Fx[sl], Fy[sl]
        a = x.to(f64).square().sum(1)
        b = y.to(f64).square().sum(1)
        acc["xy"] += (x.T @ y).to(f64)
        acc["xx"] += (x.T @ x).to(f64)
        acc["yy"] += (y.T @ y).to(f64)
        x64, y64 = x.to(f64), y.to(f64)
        acc["sx"] += x64.sum(0)
        acc["sy"] += y64.sum(0)
        acc["xb"] += x64.T @ b
        acc["ya"] += y64.T @ a
        acc["xa"] += x64.T @ a
        acc["yb"] += y64.T @ b
        sc["ab"] += float(a @ b)
        sc["aa"] += float(a @ a)
        sc["bb"] += float(b @ b)
        sc["a"] += float(a.sum())
        sc["b"] += float(b.sum())

    def hsic(M, s1, s2, v1, v2, cross_ab, sum_a, sum_b):
        # K = X X^T, L = Y Y^T with zeroed diagonals a_i = |x_i|^2, b_i = |y_i|^2:
        # tr(K~L~) = ||X^T Y||^2 - sum a b ; 1'K~1 = |s_x|^2 - sum a ;
        # 1'K~L~1 = s_x^T X^T Y s_y - s_x^T sum x b - s_y^T sum y a + sum a b.
        tr = float(M.square().sum()) - cross_ab
        k1 = float(s1 @ s1) - sum_a
        l1 = float(s2 @ s2) - sum_b
        kl1 = float(s1 @ M @ s2) - float(s1 @ v1) - float(s2 @ v2) + cross_ab
        return (tr + k1 * l1 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl1) / (n * (n - 3))

    hkl = hsic(acc["xy"], acc["sx"], acc["sy"], acc["xb"], acc["ya"], sc["ab"], sc["a"], sc["b"])
    hkk = hsic(acc["xx"], acc["sx"], acc["sx"], acc["xa"], acc["xa"], sc["aa"], sc["a"], sc["a"])
    hll = hsic(acc["yy"], acc["sy"], acc["sy"], acc["yb"], acc["yb"], sc["bb"], sc["b"], sc["b"])
    return cka_value(hkk, hll, hkl, "linear_cka")


def linear_cka(X, Y) -> float:
    """Linear CKA with the unbiased HSIC estimator (Kornblith et al. 2019; Nguyen et al. 2021).

    Features are flattened to ``(N, C*H*W)`` and centred. Invariant under orthogonal maps
    of the flattened features, isotropic scaling and shifts; 1 certifies that the centred
    features are related by an orthogonal map times a scalar (on the span of the data).

    Parameters
    ----------
    X, Y : array or tensor, shape (N, C) or (N, C, H, W)
        The same N samples, in the same order; N >= 4.

    Returns
    -------
    float
        In [-1, 1]; values near 0 (either sign) mean no detectable linear relationship.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 6))
    >>> Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    >>> round(linear_cka(X, 3 * X @ Q + 1), 6)
    1.0
    """
    X, Y = prepare(X, Y, measure="linear_cka")
    dtype = compute_dtype(X, Y)
    Fx = flat(normalised_channels(X, "X", Invariance("monomial", "trivial"), True, 0.0, dtype))
    Fy = flat(normalised_channels(Y, "Y", Invariance("monomial", "trivial"), True, 0.0, dtype))
    return _linear_cka_features(Fx, Fy)


def rbf_cka(X, Y, threshold: float = 1.0) -> float:
    """CKA with the Gaussian kernel ``exp(-|x_i - x_j|^2 / (2 threshold^2 m))`` on flattened
    features, ``m`` the median squared distance (Kornblith et al. 2019), unbiased HSIC.

    Invariant under orthogonal maps of the flattened features, isotropic scaling and shifts.
    """
    threshold = check_positive(threshold, "threshold")
    X, Y = prepare(X, Y, measure="rbf_cka")
    dtype = compute_dtype(X, Y)
    grams = []
    for F in (X, Y):
        F = F.reshape(F.shape[0], -1).to(dtype)
        D = sq_distances(F - F.mean(0, keepdim=True))
        m = median(D)
        if not m > 0:
            raise ValueError("rbf_cka: the median squared distance between samples is 0; the bandwidth is undefined.")
        grams.append(torch.exp(D.mul_(-1.0 / (2 * threshold**2 * m))))
    return cka_from_grams(grams[0], grams[1], "rbf_cka")


def g_cka(X, Y, group="relu", *, side: str = "post", dead_rtol: float = DEAD_RTOL) -> float:
    """G-CKA (Definition 5.3, appendix D.7.2): CKA with the max kernel, unbiased HSIC.

    Channels are centred over samples and positions and divided by the canonical scale the
    group allows (their norm for positive scalings); then
    ``K_ij = max_c <x_i^c, x_j^c>`` (inner product over positions) and likewise ``L``.
    For a general-linear group (``sigma(x) = c x``) the channels are whitened instead and the
    kernel is linear (the measure becomes the mean squared canonical correlation analogue).

    Parameters
    ----------
    X, Y : array or tensor, shape (N, C) or (N, C, H, W)
        Same samples in the same order, N >= 4. Channel counts and spatial sizes may differ.
    group : str or IntertwinerGroup
        Activation name, formula or group object (default ``"relu"``).
    side : {"post", "pre"}
        Features taken after the activation (acted on by phi(G)) or before it (by G).
    dead_rtol : float
        A centred channel whose norm is at most ``dead_rtol`` times its uncentred norm is
        constant (a dead unit) and is left out.

    Returns
    -------
    float in [-1, 1]
        1 when ``Y = X A + 1 v^T`` with ``A`` in the group; see docs/similarity.md for the
        extra invariances of the max kernel (channel signs, a global scale).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.maximum(rng.normal(size=(40, 5)), 0)
    >>> A = np.eye(5)[[2, 0, 4, 1, 3]] * rng.uniform(0.5, 2.0, 5)   # P D, D > 0
    >>> round(g_cka(X, X @ A + 0.3), 6)
    1.0
    """
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    X, Y = prepare(X, Y, measure="g_cka")
    inv = resolve_group(group, side)
    dtype = compute_dtype(X, Y)
    if inv.kind == "general_linear":
        return _linear_cka_features(flat(whitened_features(X, "X", True, dead_rtol)).to(dtype),
                                    flat(whitened_features(Y, "Y", True, dead_rtol)).to(dtype))
    K = max_gram(normalised_channels(X, "X", inv, True, dead_rtol, dtype), upper_only=True)
    L = max_gram(normalised_channels(Y, "Y", inv, True, dead_rtol, dtype), upper_only=True)
    return cka_from_grams(K, L, "g_cka", upper=True)


def laplace_cka(X, Y, group="relu", *, side: str = "post", threshold: float = 1.0,
                dead_rtol: float = DEAD_RTOL) -> float:
    """CKA with the Laplace kernel of eq. (5.6), ``exp(-|x_i - x_j|_1 / (threshold m))``.

    The positive definite alternative to the max kernel that section 5 suggests. Channels
    are centred and normalised as in :func:`g_cka` (``group=None``: not normalised); for
    conv features the l1 norm runs over channels of the l2 norms over positions,
    ``sum_c |x_i^c - x_j^c|_2``; ``m`` is the median of these distances. For a
    general-linear group the channels are whitened and the Euclidean distance is used.

    Parameters
    ----------
    group : str, IntertwinerGroup or None
    threshold : float
        Bandwidth as a multiple of the median distance.
    """
    threshold = check_positive(threshold, "threshold")
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    X, Y = prepare(X, Y, measure="laplace_cka")
    dtype = compute_dtype(X, Y)
    inv = Invariance("monomial", "trivial", True) if group is None else resolve_group(group, side)
    grams = []
    for F, name in ((X, "X"), (Y, "Y")):
        if inv.kind == "general_linear":
            W = flat(whitened_features(F, name, True, dead_rtol)).to(dtype)
            D = torch.cdist(W, W, p=2, compute_mode="donot_use_mm_for_euclid_dist")
        else:
            D = laplace_distances(normalised_channels(F, name, inv, True, dead_rtol, dtype))
        m = median(D)
        if not m > 0:
            raise ValueError(f"laplace_cka: the median distance between samples of {name} is 0; the bandwidth is undefined.")
        grams.append(torch.exp(D.mul_(-1.0 / (threshold * m))))
    return cka_from_grams(grams[0], grams[1], "laplace_cka")
