"""Merging several models into one: align all to a reference, average, repeat (MergeMany)."""

from __future__ import annotations

from torch import nn

from ._barrier import align_models
from ._interpolate import _check_same, average, reestimate_batchnorm
from ._stats import as_passes, first_inputs

__all__ = ["merge_many"]


def merge_many(models, data=None, iterations: int = 3, *, align: str | None = "weights", reference: int = 0,
               buffers: str = "interpolate", spec=None) -> nn.Module:
    """One model from several of the same architecture (a new model).

    Every model is aligned to ``models[reference]`` and the aligned models are averaged; then,
    ``iterations - 1`` times, every original model is aligned to the current average and the
    average is taken again (MergeMany of Ainsworth et al. 2023 aligns each model to the mean
    of the others; aligning to the mean of all is the same fixed point and one alignment per
    model per round).

    Parameters
    ----------
    models : sequence of nn.Module
        At least two models.
    data : DataLoader or iterable of (x, y) batches, optional
        Needed to align (weight matching uses only the first batch, to trace the architecture;
        activation matching all of it) and for ``buffers="reestimate"``.
    iterations : int
        Rounds of align-and-average (1: align to the reference once).
    align : {"weights", "activations", None}
        The alignment (None: plain averaging, a model soup).
    reference : int
        Index of the first reference model.
    buffers : {"interpolate", "reestimate"}
        Batch-norm statistics of the result: averaged, or re-estimated on ``data``.
    spec : SymmetrySpec, optional
        The architecture's spec (traced on ``data``'s first batch when absent).
    """
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"Argument 'models' must hold at least two models, not {len(models)}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"Argument 'iterations' must be a positive integer, not {iterations!r}.")
    if isinstance(reference, bool) or not isinstance(reference, int) or not 0 <= reference < len(models):
        raise ValueError(f"Argument 'reference' must be an index into 'models' (0..{len(models) - 1}), not {reference!r}.")
    if align not in (None, "weights", "activations"):
        raise ValueError(f"Argument 'align' must be None, 'weights' or 'activations', not {align!r}.")
    if buffers not in ("interpolate", "reestimate"):
        raise ValueError(f"Argument 'buffers' must be 'interpolate' or 'reestimate', not {buffers!r}.")
    names = tuple(f"models[{i}]" for i in range(len(models)))
    _check_same(models, names)
    if data is not None:
        data = as_passes(data)
    if (align == "activations" or buffers == "reestimate") and data is None:
        raise ValueError(f"Argument 'data' is required with align={align!r} and buffers={buffers!r}.")
    if align is None:
        merged = average(models)
    else:
        if data is None:
            raise ValueError("Argument 'data' is required to align the models (its first batch traces them).")
        if spec is None:
            from ..symmetry import symmetry_spec

            spec = symmetry_spec(models[reference], (first_inputs(data, models[reference]),))
        target = models[reference]
        for _ in range(iterations):
            aligned = [m if m is target else align_models(target, m, data, align, spec=spec)[0] for m in models]
            merged = average(aligned)
            target = merged
    if buffers == "reestimate":
        merged = reestimate_batchnorm(merged, data)
    return merged

