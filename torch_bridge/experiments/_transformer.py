"""Transformer stitching after each block (appendix D.4, figure 12) with a small vision
transformer (:func:`torch_bridge.models.vit`).

The sites are the residual stream after each block. The ``group`` stitch is constrained to the
group the torch bridge derives for the residual stream (:func:`torch_bridge.symmetry.symmetry_spec`
on the architecture, read off the spec site that ties the stream's writers together); for a
pre-LN transformer with LayerNorms that is {c P : c = +-1} (permutations times one global sign:
LN(-x) = -LN(x), but no per-unit scaling passes a layer norm), and it is compared with the
``full`` (linear) stitch and the other methods of :mod:`._stitch`. The jobs, rows and merge are
those of the stitching experiment; this entry only sets the architecture and records the group.
"""

from __future__ import annotations

import math

import torch

__all__ = ["TRANSFORMER_STITCH", "residual_constraint", "residual_group"]

_CACHE: dict = {}


def residual_group(ctx):
    """The torch bridge's group of the residual stream of ``ctx``'s transformer, and its spec site."""
    from ..symmetry import symmetry_spec
    from ._setup import build_model, example_batch

    key = (ctx.cfg.arch, ctx.cfg.width, ctx.cfg.activation, ctx.dataset_tag)
    if key not in _CACHE:
        torch.manual_seed(0)
        net = build_model(ctx.cfg.arch, width=ctx.cfg.width, activation=ctx.cfg.activation, batch_norm=True,
                          data=ctx.data).eval()
        spec = symmetry_spec(net, example_batch(ctx).cpu())
        blocks = getattr(net, "residual_sites", ())
        # the residual stream: the site shared by the writers of every block's output
        stream = [s for s in spec.sites if blocks and all(any(m.startswith(b + ".") for m in s.members)
                                                          for b in blocks)]
        if not stream:
            raise ValueError(f"Argument 'arch' ({ctx.cfg.arch!r}): the torch bridge finds no site tying the "
                             f"residual stream of the blocks {blocks!r} together.")
        site = max(stream, key=lambda s: len(s.members))
        _CACHE[key] = (site.group, site)
    return _CACHE[key]


def residual_constraint(ctx):
    """The group stitch's constraint from :func:`residual_group`."""
    from ..symmetry import GeneralLinear, Monomial, ScaledPermutation
    from ._stitch import StitchConstraint

    g, site = residual_group(ctx)
    desc = f"residual stream ({site.name}, {len(site.members)} writers): {g!r}"
    if isinstance(g, GeneralLinear):
        return StitchConstraint("full", description=desc)
    if not isinstance(g, (Monomial, ScaledPermutation)) or not getattr(g, "permutations", False):
        return StitchConstraint("none", description=desc)
    sc = g.scalings
    negative = sc.negative is not None
    if sc.positive == "all":
        lo = -math.inf if negative else 0.0
        return StitchConstraint("monomial", lo, math.inf, None, desc, shared=isinstance(g, ScaledPermutation))
    if sc.positive != "trivial":
        return StitchConstraint("none", description=desc)
    values = (-1.0, 1.0) if negative else (1.0,)
    return StitchConstraint("monomial", min(values), max(values), values, desc,
                            shared=isinstance(g, ScaledPermutation))


def _merge(cfg, info, records, results):
    from ._stitch import _merge as stitch_merge

    out = stitch_merge(cfg, info, records, results)
    out["experiment"] = "transformer_stitch"
    return out


def _plot(results, out, plt) -> list:
    from ._plots import plot_results

    return plot_results(dict(results, experiment="stitch"), out)  # figure 12 is drawn like figure 1


def _register():
    from ._plots import register_plot
    from ._registry import ExperimentKind
    from ._stitch import STITCH

    register_plot("transformer_stitch")(_plot)
    return ExperimentKind(
        "transformer_stitch", batch_norm=True, n_models=STITCH.n_models, plan=STITCH.plan, job_kind="stitch",
        run=STITCH.run, merge=_merge, validate=_validate, summary_key="method",
        # smoke: 40 epochs of the 8x8 digits reach 83-86% (10 epochs of width 16: under 20%)
        presets={"smoke": dict(arch="vit", width=32, activation="gelu", methods=("full", "rank1", "group"),
                               train=dict(epochs=40, batch_size=64, lr=3e-3)),
                 # Adam, as for transformers (the common cpu preset's SGD recipe is for the CNNs)
                 "cpu": dict(arch="vit", width=64, activation="gelu", methods=("full", "rank1", "rank4", "group"),
                             train=dict(epochs=4, batch_size=64, lr=2e-3, n_train=20000)),
                 "paper": dict(arch="vit", width=192, activation="gelu",
                               methods=("full", "rank1", "rank4", "rank16", "group"))})


def _validate(cfg):
    from ._stitch import _validate as stitch_validate

    if cfg.arch != "vit":
        raise ValueError(f"Argument 'arch' must be 'vit' for transformer_stitch (stitching the residual stream "
                         f"after each block), not {cfg.arch!r}; use the stitch experiment for CNNs.")
    stitch_validate(cfg)


TRANSFORMER_STITCH = _register()
