"""Loss and accuracy along the linear path between two models, and the barrier."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._interpolate import _check_same, interpolate
from ._stats import as_passes, batches, eval_mode, first_inputs

__all__ = ["barrier", "BarrierResult", "evaluate", "align_models"]

ALIGN_METHODS = (None, "weights", "activations")


@dataclass(frozen=True)
class BarrierResult:
    """The loss and accuracy along :math:`\\theta(\\alpha) = (1-\\alpha)\\theta_a + \\alpha\\theta_b` and the barrier.

    Attributes
    ----------
    alphas, loss, accuracy : tuple of float
        The path: mean cross-entropy and accuracy (in [0, 1]) at each alpha.
    metric : str
        ``"loss"`` or ``"accuracy"``: what :attr:`barrier` measures.
    barrier : float
        :math:`\\max_\\alpha [L(\\theta(\\alpha)) - ((1-\\alpha)L(\\theta_a) + \\alpha L(\\theta_b))]` for the
        loss (Ainsworth et al. 2023, eq. 1; Frankle et al. 2020 use the mean of the endpoints
        instead of the line), and for the accuracy the largest drop below the line
        :math:`\\max_\\alpha [((1-\\alpha)A_a + \\alpha A_b) - A(\\theta(\\alpha))]`. With the endpoints on
        the grid it is at least 0; 0 means no barrier.
    loss_barrier, accuracy_barrier : float
        Both barriers, whatever ``metric`` is.
    align : str or None
        The alignment applied to ``model_b`` first (``None``, ``"weights"``, ``"activations"``).
    distance_before, distance_after : float or None
        Weight distance between the models before and after the alignment.
    feature_distance_before, feature_distance_after : float or None
        With activation matching, the distance between the two models' hidden features on the
        statistics data before and after (as :class:`~torch_bridge.symmetry.AlignmentReport`
        gives it).
    align_seconds : float or None
        Time the alignment took (tracing the spec included when none was given).
    repair : bool
        Whether REPAIR was applied at the interior points.
    buffers : str
        How batch-norm statistics were set at the interior points without REPAIR.
    """

    alphas: tuple
    loss: tuple
    accuracy: tuple
    metric: str
    barrier: float
    loss_barrier: float
    accuracy_barrier: float
    align: str | None = None
    distance_before: float | None = None
    distance_after: float | None = None
    align_seconds: float | None = field(default=None, compare=False)
    repair: bool = False
    buffers: str = "interpolate"
    feature_distance_before: float | None = None
    feature_distance_after: float | None = None

    def __post_init__(self):
        for name in ("alphas", "loss", "accuracy"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers become None)."""
        def num(v):
            return v if v is None or math.isfinite(v) else None

        return {"alphas": list(self.alphas), "loss": [num(v) for v in self.loss],
                "accuracy": [num(v) for v in self.accuracy], "metric": self.metric, "barrier": num(self.barrier),
                "loss_barrier": num(self.loss_barrier), "accuracy_barrier": num(self.accuracy_barrier),
                "align": self.align, "distance_before": self.distance_before, "distance_after": self.distance_after,
                "feature_distance_before": self.feature_distance_before,
                "feature_distance_after": self.feature_distance_after,
                "align_seconds": self.align_seconds, "repair": self.repair, "buffers": self.buffers}


def evaluate(model: nn.Module, data, loss_fn=None) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode over ``data``, averaged over every label.

    The loss is cross-entropy unless ``loss_fn(logits, y)`` returning per-label losses is given.
    Logits ``(N, C)`` go with labels ``(N,)``; sequence logits ``(N, T, V)`` (a language model's,
    or a Hugging Face output's ``.logits``) with labels ``(N, T)``; otherwise the classes are
    dimension 1, as for ``F.cross_entropy``."""
    total = correct = 0.0
    n = 0
    with eval_mode(model), torch.no_grad():
        for x, y in batches(data, model, need_labels=True):
            out = model(x)
            out = getattr(out, "logits", out)
            if out.dim() == 3 and y.dim() == 2 and out.shape[:2] == y.shape:
                out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
            per = F.cross_entropy(out.float(), y, reduction="none") if loss_fn is None else loss_fn(out, y)
            total += float(per.double().sum())
            correct += float((out.argmax(1) == y).sum())
            n += int(y.numel())
    return total / n, correct / n


def _alphas(alphas) -> tuple:
    if isinstance(alphas, bool):
        raise ValueError(f"Argument 'alphas' must be a number of points (>= 2) or a sequence of floats, not {alphas!r}.")
    if isinstance(alphas, int):
        if alphas < 2:
            raise ValueError(f"Argument 'alphas' must be at least 2 points, not {alphas!r}.")
        return tuple(i / (alphas - 1) for i in range(alphas))
    try:
        out = tuple(float(a) for a in alphas)
    except (TypeError, ValueError):
        raise ValueError(f"Argument 'alphas' must be a number of points (>= 2) or a sequence of floats, "
                         f"not {alphas!r}.") from None
    if not out or not all(math.isfinite(a) for a in out):
        raise ValueError(f"Argument 'alphas' must hold finite numbers, not {alphas!r}.")
    return out


def align_models(model_a: nn.Module, model_b: nn.Module, data, method: str, *, spec=None, **align_options):
    """``(aligned copy of model_b, AlignmentReport, seconds)`` by :func:`torch_bridge.symmetry.align`.

    Activation matching reads the producers' outputs on ``data`` (streamed when ``align``
    accepts a ``data`` argument; otherwise on the first batch)."""
    import inspect

    from ..symmetry import align, symmetry_spec

    if method not in ("weights", "activations"):
        raise ValueError(f"Argument 'align' must be None, 'weights' or 'activations', not {method!r}.")
    data = as_passes(data)
    x = first_inputs(data, model_a)
    t0 = time.perf_counter()
    with eval_mode(model_a), eval_mode(model_b):
        if spec is None:
            spec = symmetry_spec(model_a, (x,))
        kwargs = dict(align_options)
        if method == "activations" and "data" in inspect.signature(align).parameters:
            kwargs["data"] = [xb for xb, _ in batches(data, model_a)]
        g, report = align(model_a, model_b, (x,), method=method, spec=spec, return_report=True, **kwargs)
        moved = spec.act(g, model_b)
    return moved, report, time.perf_counter() - t0


def barrier(model_a: nn.Module, model_b: nn.Module, data, alphas=11, *, metric: str = "loss", align=None,
            repair: bool = False, buffers: str = "interpolate", stats_data=None, spec=None, loss_fn=None,
            progress=None) -> BarrierResult:
    """The loss and accuracy along the linear path from ``model_a`` to ``model_b``, and the barrier.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two models of the same architecture.
    data : DataLoader or iterable of (x, y) batches
        Evaluation data.
    alphas : int or sequence of float
        Number of evenly spaced points on [0, 1] (endpoints included), or the points.
    metric : {"loss", "accuracy"}
        Which barrier :attr:`BarrierResult.barrier` holds (both are stored).
    align : {None, "weights", "activations"}
        First align ``model_b`` to ``model_a`` with :func:`torch_bridge.symmetry.align` (the
        full group of the architecture; activation matching on ``stats_data``).
    repair : bool
        Apply :func:`repair` at every interior point (statistics on ``stats_data``).
    buffers : {"interpolate", "reestimate"}
        Batch-norm statistics at interior points without REPAIR: interpolated, or re-estimated
        on ``stats_data`` (:func:`reestimate_batchnorm`).
    stats_data : optional
        Data for the statistics (REPAIR, re-estimation, activation matching); default ``data``.
    spec : SymmetrySpec, optional
        The architecture's spec for the alignment (traced from ``model_a`` when absent).
    loss_fn : callable, optional
        ``loss_fn(logits, y)`` -> per-sample losses (default cross-entropy).
    progress : callable, optional
        Called as ``progress(i, n)`` after each point.

    The endpoints are evaluated as the models themselves (``model_b`` after its alignment, which
    computes the same function); REPAIR and re-estimation apply to the interior points only.

    Examples
    --------
    >>> from torch_bridge.models import mlp
    >>> net = mlp([4, 8, 3])
    >>> batch = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    >>> barrier(net, net, [batch], alphas=3).barrier
    0.0
    """
    from ._repair import repair as _repair

    if metric not in ("loss", "accuracy"):
        raise ValueError(f"Argument 'metric' must be 'loss' or 'accuracy', not {metric!r}.")
    if align not in ALIGN_METHODS:
        raise ValueError(f"Argument 'align' must be None, 'weights' or 'activations', not {align!r}.")
    if buffers not in ("interpolate", "reestimate"):
        raise ValueError(f"Argument 'buffers' must be 'interpolate' or 'reestimate', not {buffers!r}.")
    grid = _alphas(alphas)
    _check_same([model_a, model_b])
    data = as_passes(data)
    stats = data if stats_data is None else as_passes(stats_data, "stats_data")
    before = after = secs = fbefore = fafter = None
    if align is not None:
        model_b, report, secs = align_models(model_a, model_b, stats, align, spec=spec)
        before, after = float(report.distance_before), float(report.distance_after)
        fb, fa = getattr(report, "feature_distance_before", None), getattr(report, "feature_distance_after", None)
        fbefore, fafter = (None if fb is None else float(fb)), (None if fa is None else float(fa))
    losses, accs = [], []
    for i, a in enumerate(grid):
        if a == 0.0:
            m = model_a
        elif a == 1.0:
            m = model_b
        elif repair:
            m = _repair(model_a, model_b, interpolate(model_a, model_b, a), stats, alpha=a)
        else:
            m = interpolate(model_a, model_b, a, buffers=buffers, data=stats if buffers == "reestimate" else None)
        loss, acc = evaluate(m, data, loss_fn)
        losses.append(loss)
        accs.append(acc)
        if progress is not None:
            progress(i + 1, len(grid))
    lb, ab = _barrier_of(grid, losses, accs, model_a, model_b, data, loss_fn)
    return BarrierResult(grid, losses, accs, metric, lb if metric == "loss" else ab, lb, ab, align, before, after, secs,
                         bool(repair), buffers, fbefore, fafter)


def _barrier_of(grid, losses, accs, model_a, model_b, data, loss_fn):
    """Both barriers; the endpoints' values are read off the grid or evaluated."""
    def at(x):
        if x in grid:
            i = grid.index(x)
            return losses[i], accs[i]
        return evaluate(model_a if x == 0.0 else model_b, data, loss_fn)

    (la, aa), (lb, ab) = at(0.0), at(1.0)
    loss_b = max(l - ((1 - a) * la + a * lb) for a, l in zip(grid, losses))
    acc_b = max(((1 - a) * aa + a * ab) - c for a, c in zip(grid, accs))
    return float(loss_b), float(acc_b)
