"""HSIC estimators and CKA from Gram matrices.

``estimator="unbiased"`` (the default): the U-statistic of Song et al. 2012 (Nguyen, Raghu
and Kornblith 2021, eq. 3). ``estimator="biased"``: Gretton et al.'s
``HSIC_0 = tr(K H L H) / (N-1)^2`` with ``H = I - 11^T/N``, the estimator of Kornblith et
al. 2019's CKA. Both are computed from the same streamed sums (below); the biased one adds
the diagonals back.

For N x N kernel matrices with their diagonals set to zero (K~, L~),

.. math::

    \\mathrm{HSIC}_1(K, L) = \\frac{1}{N(N-3)} \\Big[ \\mathrm{tr}(\\tilde K \\tilde L)
        + \\frac{1^T \\tilde K 1 \\; 1^T \\tilde L 1}{(N-1)(N-2)}
        - \\frac{2}{N-2} 1^T \\tilde K \\tilde L 1 \\Big].

It equals the Frobenius inner product of the U-centred matrices divided by N(N-3), so
HSIC_1(K, K) >= 0 for every symmetric K (positive definite or not) and Cauchy-Schwarz gives
|CKA| <= 1; it does not give CKA >= 0: the unbiased estimator of a zero dependence is
negative about half of the time.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ESTIMATORS", "check_estimator", "hsic_terms", "cka_from_grams", "cka_value", "center_gram"]

ESTIMATORS = ("unbiased", "biased")


def check_estimator(estimator) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"Argument 'estimator' must be 'unbiased' or 'biased', not {estimator!r}.")
    return estimator


def min_samples(estimator: str) -> int:
    """N needed: 4 for the unbiased estimator (it divides by N(N-3)), 2 for the biased one."""
    return 4 if estimator == "unbiased" else 2

#: Rows of an N x N matrix converted to float64 at once.
_ROWS = 1 << 21


def hsic_terms(K: torch.Tensor, L: torch.Tensor, upper: bool = False, estimator: str = "unbiased",
               diag_k: torch.Tensor | None = None, diag_l: torch.Tensor | None = None) -> tuple[float, float, float]:
    """``(HSIC(K, K), HSIC(L, L), HSIC(K, L))`` in float64, row block by row block.

    With ``upper`` only the strictly upper triangles of the symmetric matrices ``K`` and
    ``L`` are read (the rest may hold anything) and the biased estimator takes the diagonals
    from ``diag_k``, ``diag_l``; otherwise the diagonals are read and then overwritten with
    zeros in place.
    """
    n = K.shape[0]
    need = min_samples(estimator)
    if n < need:
        why = "the unbiased HSIC estimator needs N >= 4 samples" if need == 4 else "HSIC needs N >= 2 samples"
        raise ValueError(f"{why}, got N={n}")
    biased = estimator == "biased"
    if biased:
        if upper:
            if diag_k is None or diag_l is None:
                raise ValueError("the biased estimator on upper triangles needs the diagonals")
            dk, dl = diag_k.to(torch.float64), diag_l.to(torch.float64)
        else:
            dk, dl = torch.diagonal(K).to(torch.float64).clone(), torch.diagonal(L).to(torch.float64).clone()
    if not upper:
        K.fill_diagonal_(0)
        L.fill_diagonal_(0)
    kk = ll = kl = 0.0
    rk = torch.zeros(n, dtype=torch.float64, device=K.device)
    rl = torch.zeros(n, dtype=torch.float64, device=K.device)
    step = max(1, _ROWS // n)
    for s in range(0, n, step):
        e = min(n, s + step)
        if upper:
            # Rows s:e, columns s: (the strictly lower part of this slab is zeroed by triu).
            k = torch.triu(K[s:e, s:].to(torch.float64), diagonal=1)
            m = torch.triu(L[s:e, s:].to(torch.float64), diagonal=1)
            rk[s:] += k.sum(dim=0)
            rl[s:] += m.sum(dim=0)
        else:
            k = K[s:e].to(torch.float64)
            m = L[s:e].to(torch.float64)
        kk += float(torch.sum(k * k))
        ll += float(torch.sum(m * m))
        kl += float(torch.sum(k * m))
        rk[s:e] += k.sum(dim=1)
        rl[s:e] += m.sum(dim=1)
    if upper:
        kk, ll, kl = 2 * kk, 2 * ll, 2 * kl
    if biased:
        # Full matrices K = K~ + diag(dk): tr(K H L H) = sum K*L - 2/n r_k.r_l + s_k s_l / n^2.
        fk, fl = rk + dk, rl + dl
        sk, sl = float(fk.sum()), float(fl.sum())

        def h0(trace, d1, d2, r1, r2, s1, s2):
            return (trace + float(d1 @ d2) - 2.0 / n * float(r1 @ r2) + s1 * s2 / n**2) / (n - 1) ** 2

        return h0(kk, dk, dk, fk, fk, sk, sk), h0(ll, dl, dl, fl, fl, sl, sl), h0(kl, dk, dl, fk, fl, sk, sl)
    sk, sl = float(rk.sum()), float(rl.sum())

    def h(trace, a, b, ra, rb):
        return (trace + a * b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(ra @ rb)) / (n * (n - 3))

    return h(kk, sk, sk, rk, rk), h(ll, sl, sl, rl, rl), h(kl, sk, sl, rk, rl)


def center_gram(K: torch.Tensor, estimator: str = "unbiased") -> torch.Tensor:
    """The centred Gram matrix whose Frobenius inner products give HSIC (float64, a new tensor).

    ``"unbiased"``: the U-centred matrix (Szekely and Rizzo 2014) with zero diagonal,
    ``HSIC_1(K, L) = <U(K), U(L)> / (N (N-3))``; ``"biased"``: ``H K H``,
    ``HSIC_0(K, L) = <HKH, HLH> / (N-1)^2``. Summing these inner products over minibatches
    is how :func:`minibatch_cka` and :func:`layer_similarity` stream.
    """
    n = K.shape[0]
    M = K.to(torch.float64).clone()
    if estimator == "biased":
        M -= M.mean(dim=0, keepdim=True)
        M -= M.mean(dim=1, keepdim=True)
        return M
    M.fill_diagonal_(0)
    r = M.sum(dim=1)
    M -= r[:, None] / (n - 2)
    M -= r[None, :] / (n - 2)
    M += float(r.sum()) / ((n - 1) * (n - 2))
    M.fill_diagonal_(0)
    return M


def hsic_normaliser(n: int, estimator: str) -> float:
    """The divisor of ``<centred K, centred L>``: N(N-3) (unbiased) or (N-1)^2 (biased)."""
    return float(n * (n - 3)) if estimator == "unbiased" else float((n - 1) ** 2)


def cka_value(hkk: float, hll: float, hkl: float, what: str = "") -> float:
    """hkl / sqrt(hkk hll), with an error when one side has no variation at all."""
    if not (math.isfinite(hkk) and math.isfinite(hll) and math.isfinite(hkl)):
        raise ValueError(f"{what + ': ' if what else ''}the HSIC terms overflowed; rescale the features.")
    if not hkk > 0 or not hll > 0:
        side = "X" if not hkk > 0 else "Y"
        raise ValueError(
            f"{what + ': ' if what else ''}the kernel matrix of {side} has no variation between samples "
            "(HSIC = 0): CKA is undefined."
        )
    v = hkl / (hkk * hll) ** 0.5
    # Rounding can push an exact 1 slightly past it; the estimator itself is bounded by 1.
    return float(min(1.0, max(-1.0, v)))


def cka_from_grams(K: torch.Tensor, L: torch.Tensor, what: str = "", upper: bool = False,
                   estimator: str = "unbiased", diag_k=None, diag_l=None) -> float:
    return cka_value(*hsic_terms(K, L, upper=upper, estimator=estimator, diag_k=diag_k, diag_l=diag_l), what=what)
