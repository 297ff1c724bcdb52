"""The CKA family: g_cka (max kernel), laplace_cka (l1 kernel), linear_cka and rbf_cka,
with the unbiased (default) or the biased HSIC estimator."""

from __future__ import annotations

import torch

from ._features import DEAD_RTOL, compute_dtype, row_batches
from ._hsic import check_estimator, cka_from_grams, cka_value, min_samples
from ._invariance import Invariance, resolve_group
from ._kernels import laplace_distances, linear_gram, max_gram, sq_distances
from ._prep import check_positive, check_tol, flat, median, normalised_channels, prepare, whitened_features
from ._provenance import warn_if_group_differs

__all__ = ["g_cka", "laplace_cka", "linear_cka", "rbf_cka"]


def _linear_cka_features(Fx: torch.Tensor, Fy: torch.Tensor, estimator: str = "unbiased") -> float:
    return cka_value(*linear_hsic_terms(Fx, Fy, estimator), "linear_cka")


def linear_hsic_terms(Fx: torch.Tensor, Fy: torch.Tensor, estimator: str = "unbiased") -> tuple[float, float, float]:
    """``(HSIC(K, K), HSIC(L, L), HSIC(K, L))`` of the linear kernels of ``(N, D)`` feature
    matrices (centred over samples: the biased route relies on it).

    When both widths are at most N the Gram matrices are never formed: the HSIC terms are
    accumulated over row batches in feature space (``||X^T Y||_F^2`` and friends, float64).
    Otherwise the N x N Gram matrices are built with one matrix product each.
    """
    n = Fx.shape[0]
    dx, dy = Fx.shape[1], Fy.shape[1]
    if max(dx, dy) > n:
        from ._hsic import hsic_terms

        return hsic_terms(linear_gram(Fx), linear_gram(Fy), estimator=estimator)
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

    if estimator == "biased":
        # Centred features: H K H = K, so tr(K H L H) = ||X^T Y||_F^2 (Kornblith et al. eq. 2).
        # The column sums are not exactly 0 after rounding; remove what is left of them.
        def h0(M, s1, s2):
            return float((M - torch.outer(s1, s2) / n).square().sum()) / (n - 1) ** 2

        return h0(acc["xx"], acc["sx"], acc["sx"]), h0(acc["yy"], acc["sy"], acc["sy"]), h0(acc["xy"], acc["sx"], acc["sy"])
    hkl = hsic(acc["xy"], acc["sx"], acc["sy"], acc["xb"], acc["ya"], sc["ab"], sc["a"], sc["b"])
    hkk = hsic(acc["xx"], acc["sx"], acc["sx"], acc["xa"], acc["xa"], sc["aa"], sc["a"], sc["a"])
    hll = hsic(acc["yy"], acc["sy"], acc["sy"], acc["yb"], acc["yb"], sc["bb"], sc["b"], sc["b"])
    return hkk, hll, hkl


_ESTIMATOR_DOC = """estimator : {"unbiased", "biased"}
        ``"unbiased"`` (default): the U-statistic HSIC_1 of Song et al. / Nguyen et al. (eq. 5.4
        of the paper), which has no bias in N and whose value for independent features
        scatters around 0 (either sign); ``"biased"``: Kornblith et al. 2019's
        ``tr(K H L H) / (N-1)^2`` with centred Gram matrices, in [0, 1] for positive definite
        kernels but biased upwards by O(1/N) on high-dimensional features.
    layout : {None, "channels_first", "channels_last", ...}
        Where the channels are: None or ``"channels_first"`` (``"NC"``, ``"NCHW"``, ``"NCL"``):
        axis 1; ``"channels_last"`` (``"NHWC"``, ``"NTC"``): the last axis, other axes are
        positions (tokens of a transformer are positions). See docs/similarity.md."""


def linear_cka(X, Y, *, estimator: str = "unbiased", layout=None) -> float:
    """Linear CKA (Kornblith et al. 2019; Nguyen et al. 2021).

    Features are flattened to ``(N, C*H*W)`` and centred. Invariant under orthogonal maps
    of the flattened features, isotropic scaling and shifts; 1 certifies that the centred
    features are related by an orthogonal map times a scalar (on the span of the data).

    Parameters
    ----------
    X, Y : array or tensor, shape (N, C) or (N, C, H, W)
        The same N samples, in the same order; N >= 4 (N >= 2 for the biased estimator).
    {estimator}

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
    >>> round(linear_cka(X, 3 * X @ Q + 1, estimator="biased"), 6)
    1.0
    """
    estimator = check_estimator(estimator)
    X, Y, _, _ = prepare(X, Y, min_samples=min_samples(estimator), layout=layout, measure="linear_cka")
    return _linear_cka_features(*linear_features(X, Y), estimator)


def linear_features(X, Y):
    """Centred flattened ``(N, D)`` features of a prepared pair (the linear kernel's input)."""
    dtype = compute_dtype(X, Y)
    Fx = flat(normalised_channels(X, "X", Invariance("monomial", "trivial"), True, 0.0, dtype))
    Fy = flat(normalised_channels(Y, "Y", Invariance("monomial", "trivial"), True, 0.0, dtype))
    return Fx, Fy


def rbf_gram(F: torch.Tensor, threshold: float, dtype) -> torch.Tensor:
    """``exp(-|x_i - x_j|^2 / (2 threshold^2 m))`` on flattened ``(N, C, P)`` features."""
    F = F.reshape(F.shape[0], -1).to(dtype)
    D = sq_distances(F - F.mean(0, keepdim=True))
    m = median(D)
    if not m > 0:
        raise ValueError("rbf_cka: the median squared distance between samples is 0; the bandwidth is undefined.")
    return torch.exp(D.mul_(-1.0 / (2 * threshold**2 * m)))


def rbf_cka(X, Y, threshold: float = 1.0, *, estimator: str = "unbiased", layout=None) -> float:
    """CKA with the Gaussian kernel ``exp(-|x_i - x_j|^2 / (2 threshold^2 m))`` on flattened
    features, ``m`` the median squared distance (Kornblith et al. 2019).

    Invariant under orthogonal maps of the flattened features, isotropic scaling and shifts.

    Parameters
    ----------
    {estimator}
    """
    threshold = check_positive(threshold, "threshold")
    estimator = check_estimator(estimator)
    X, Y, _, _ = prepare(X, Y, min_samples=min_samples(estimator), layout=layout, measure="rbf_cka")
    dtype = compute_dtype(X, Y)
    return cka_from_grams(rbf_gram(X, threshold, dtype), rbf_gram(Y, threshold, dtype), "rbf_cka",
                          estimator=estimator)


def max_gram_of(F, name, inv, dead_rtol, dtype, exponent=0, stats=None, upper_only=True):
    """The max kernel of G-CKA on prepared ``(N, C, P)`` features, and its diagonal.

    For a general-linear ``inv`` the channels are whitened and the kernel is linear
    (``stats`` is not used then)."""
    if inv.kind == "general_linear":
        W = flat(whitened_features(F, name, True, dead_rtol)).to(dtype)
        K = linear_gram(W)
        return K, torch.diagonal(K).clone()
    Z = normalised_channels(F, name, inv, True, dead_rtol, dtype, exponent, stats)
    diag = Z.square().sum(dim=2).amax(dim=0)
    return max_gram(Z, upper_only=upper_only), diag


def g_cka(X, Y, group="relu", *, side: str = "post", dead_rtol: float = DEAD_RTOL, estimator: str = "unbiased",
          layout=None) -> float:
    """G-CKA (Definition 5.3, appendix D.7.2): CKA with the max kernel.

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
        Activation name, formula or group object (default ``"relu"``). A warning is given
        when ``X`` or ``Y`` came from :func:`collect_features` on an activation module whose
        group differs.
    side : {{"post", "pre"}}
        Features taken after the activation (acted on by phi(G)) or before it (by G).
    dead_rtol : float
        A centred channel whose norm is at most ``dead_rtol`` times its uncentred norm is
        constant (a dead unit) and is left out.
    {estimator}

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
    estimator = check_estimator(estimator)
    inv = resolve_group(group, side)
    warn_if_group_differs(X, Y, inv, side, "g_cka")
    X, Y, ex, ey = prepare(X, Y, min_samples=min_samples(estimator), layout=layout, measure="g_cka", inv=inv)
    dtype = compute_dtype(X, Y)
    if inv.kind == "general_linear":
        return _linear_cka_features(flat(whitened_features(X, "X", True, dead_rtol)).to(dtype),
                                    flat(whitened_features(Y, "Y", True, dead_rtol)).to(dtype), estimator)
    K, dk = max_gram_of(X, "X", inv, dead_rtol, dtype, ex)
    L, dl = max_gram_of(Y, "Y", inv, dead_rtol, dtype, ey)
    return cka_from_grams(K, L, "g_cka", upper=True, estimator=estimator, diag_k=dk, diag_l=dl)


def laplace_gram(F, name, inv, threshold, dead_rtol, dtype, exponent=0):
    """The kernel of :func:`laplace_cka` on prepared ``(N, C, P)`` features."""
    if inv.kind == "general_linear":
        W = flat(whitened_features(F, name, True, dead_rtol)).to(dtype)
        D = torch.cdist(W, W, p=2, compute_mode="donot_use_mm_for_euclid_dist")
    else:
        D = laplace_distances(normalised_channels(F, name, inv, True, dead_rtol, dtype, exponent))
    m = median(D)
    if not m > 0:
        raise ValueError(f"laplace_cka: the median distance between samples of {name} is 0; the bandwidth is undefined.")
    return torch.exp(D.mul_(-1.0 / (threshold * m)))


def laplace_cka(X, Y, group="relu", *, side: str = "post", threshold: float = 1.0,
                dead_rtol: float = DEAD_RTOL, estimator: str = "unbiased", layout=None) -> float:
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
    {estimator}
    """
    threshold = check_positive(threshold, "threshold")
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    estimator = check_estimator(estimator)
    inv = Invariance("monomial", "trivial", True) if group is None else resolve_group(group, side)
    if group is not None:
        warn_if_group_differs(X, Y, inv, side, "laplace_cka")
    X, Y, ex, ey = prepare(X, Y, min_samples=min_samples(estimator), layout=layout, measure="laplace_cka", inv=inv)
    dtype = compute_dtype(X, Y)
    K = laplace_gram(X, "X", inv, threshold, dead_rtol, dtype, ex)
    L = laplace_gram(Y, "Y", inv, threshold, dead_rtol, dtype, ey)
    return cka_from_grams(K, L, "laplace_cka", estimator=estimator)


for _f in (linear_cka, rbf_cka, g_cka, laplace_cka):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.format(estimator=_ESTIMATOR_DOC)
del _f
