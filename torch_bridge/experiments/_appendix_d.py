"""Two stitching studies of appendix D, on the models of the stitching experiment:

* ``l1_sparsity`` (D.6, figure 15): full 1x1 stitches with an l1 penalty ``lambda sum |W_ij|``
  for each lambda of ``l1_strengths``, and the group stitch, with the sparsity of eq. D.1 of
  each stitching matrix (the fraction of ``|W_ij| <= sparsity_threshold``; a rounded group
  stitch P D has sparsity exactly ``1 - 1/C``).
* ``alpha_cv`` (D.5, figures 13 and 14): the multiplier alpha of the ``-alpha ||P||`` term of
  the group stitch chosen by cross-validation: a random ``cv_fraction`` of the training set is
  held out, a group stitch is trained on the rest for ``cv_epochs`` epochs without a head
  start for every alpha of ``cv_alphas``, and the alpha of highest held-out accuracy is
  selected; its test penalty is reported.

One job stitches one pair at one layer with one lambda (or the group stitch), or with one alpha.
"""

from __future__ import annotations

import numpy as np

from ._config import summarize

__all__ = ["L1_SPARSITY", "ALPHA_CV", "cv_split"]


def _pairs_and_sites(ctx, specs):
    from ._setup import rng_for

    rng = rng_for(ctx, "pairs")
    n = len(specs)
    all_pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    return [all_pairs[k] for k in rng.choice(len(all_pairs), ctx.cfg.pairs, replace=False)], ctx.sites(True)


def _plan_with(kind: str, variants):
    """A planner of one job per (pair, site, variant); ``variants(cfg) -> [(label, params)]``."""
    def plan(ctx, specs):
        from ._jobs import make_job
        from ._setup import rng_for
        from ._stitch import _sites_json

        cfg = ctx.cfg
        chosen, sites = _pairs_and_sites(ctx, specs)
        basis = cfg.job_basis()
        jobs = []
        for p, (i, j) in enumerate(chosen):
            for site in sites:
                for label, extra in variants(cfg):
                    params = {"pair": p, "front": specs[i].key, "back": specs[j].key, "front_seed": specs[i].seed,
                              "back_seed": specs[j].seed, "site": site.name, **extra,
                              "seed": int(rng_for(ctx, kind, p, site.name, label).integers(2 ** 31))}
                    jobs.append(make_job(kind, f"{kind}-p{p}-{site.name}-{label}", params, basis))
        return jobs, {"sites": _sites_json(sites), "pairs": [list(c) for c in chosen]}
    return plan


def _stitch_row(ctx, q, method, **options):
    from ._setup import zoo_model
    from ._stitch import stitch_constraint, train_stitch

    front, rf = zoo_model(ctx, q["front_seed"], True)
    back, rb = zoo_model(ctx, q["back_seed"], True)
    site = ctx.site(q["site"], True)
    constraint = stitch_constraint(ctx.cfg.activation) if method == "group" else None
    acc, info = train_stitch(front, back, site, method, ctx, seed=q["seed"], constraint=constraint, **options)
    base = (rf["test_acc"] + rb["test_acc"]) / 2
    info.pop("acc_relaxed_before_rounding")
    row = {"layer": site.name, "layer_index": site.index, "channels": site.channels,
           "inside_residual": site.inside_residual, "pair": q["pair"], "front_seed": rf["seed"],
           "back_seed": rb["seed"], "penalty": 100.0 * (base - acc), "acc_stitched": 100.0 * acc,
           "acc_models_mean": 100.0 * base, **info}
    if "acc_val" in row:
        row["acc_val"] = 100.0 * row["acc_val"]
    return row


def _base_merge(name, cfg, info, records, rows, units, keys, value="penalty"):
    from ._setup import accuracy_summary, records_in_points

    return {"experiment": name, "config": cfg.to_json(), "sites": info["sites"], "pairs": info["pairs"],
            "models": records_in_points(records), "accuracy": accuracy_summary(records), "units": units,
            "rows": rows, "summary": summarize(rows, keys, value)}


def _validate_pairs(cfg):
    from ._stitch import _validate

    if cfg.arch == "vit":
        raise ValueError("Argument 'arch' is 'vit', but l1_sparsity and alpha_cv stitch activation sites of CNNs "
                         "and MLPs (the transformer's residual stream is stitched by transformer_stitch).")
    _validate(cfg)


# l1 sparsity (D.6) ------------------------------------------------------------------------

def _l1_variants(cfg):
    out = [(f"l1={lam!r}", {"method": "full", "l1": float(lam)}) for lam in cfg.l1_strengths]
    from ._stitch import stitch_constraint

    if stitch_constraint(cfg.activation).kind == "monomial":
        out.append(("group", {"method": "group", "l1": 0.0}))
    return out


def _l1_run(ctx, job) -> dict:
    q = job.params
    row = _stitch_row(ctx, q, q["method"], l1=q["l1"])
    series = "group" if q["method"] == "group" else f"l1 {q['l1']:g}"
    return dict(row, method=q["method"], l1=q["l1"], series=series, threshold=ctx.cfg.sparsity_threshold)


def _l1_merge(cfg, info, records, results):
    rows = list(results)
    out = _base_merge("l1_sparsity", cfg, info, records, rows,
                      {"penalty": "accuracy points", "acc_stitched": "accuracy points",
                       "acc_models_mean": "accuracy points", "sparsity": "fraction of entries, eq. D.1"},
                      ("layer", "series"))
    sp = {(s["layer"], s["series"]): s for s in summarize(rows, ("layer", "series"), "sparsity")}
    for s in out["summary"]:
        q = sp[(s["layer"], s["series"])]
        s["sparsity_mean"], s["sparsity_ci95"] = q["mean"], q["ci95"]
    return out


def _l1_plot(results, out, plt) -> list:
    from ._plots import _label, save_figure

    cfg = results["config"]
    layers = [s["layer"] for s in results["sites"]]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers):
        for s in (r for r in results["summary"] if r["layer"] == layer):
            lab = _label("group", cfg["activation"]) if s["series"] == "group" else f"$\\lambda$={s['series'][3:]}"
            ax.errorbar(s["sparsity_mean"], s["mean"], yerr=s["ci95"] or 0, xerr=s["sparsity_ci95"] or 0,
                        marker="*" if s["series"] == "group" else "o", ls="none", capsize=2, label=lab)
        ax.set_title(layer, fontsize=8)
        ax.set_xlabel("sparsity (eq. D.1)")
        ax.set_xlim(-0.02, 1.02)
    axes[0][0].set_ylabel("stitching penalty (accuracy points)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"l1-regularised stitching vs sparsity (fig. 15), {cfg['arch']} w{cfg['width']} on "
                 f"{cfg['dataset']}, threshold {cfg['sparsity_threshold']:g}", fontsize=9)
    return [save_figure(fig, out / "l1_sparsity.png")]


# alpha cross-validation (D.5) -------------------------------------------------------------

def cv_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``n`` training images: (train indices, held-out indices), sorted.

    >>> tr, va = cv_split(10, 0.2, 0)
    >>> len(tr), len(va), sorted(set(tr) | set(va)) == list(range(10))
    (8, 2, True)
    """
    perm = np.random.default_rng([seed, 5]).permutation(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _cv_variants(cfg):
    return [(f"alpha={a!r}", {"alpha": float(a)}) for a in cfg.cv_alphas]


def _cv_validate(cfg):
    _validate_pairs(cfg)
    from ._stitch import stitch_constraint

    c = stitch_constraint(cfg.activation)
    if c.kind != "monomial":
        raise ValueError(f"Argument 'activation': alpha_cv tunes the -alpha ||P|| term of the group stitch, but the "
                         f"group of {cfg.activation!r} is not monomial ({c.kind}), so there is no P to regularise.")


def _cv_run(ctx, job) -> dict:
    q = job.params
    cfg = ctx.cfg
    tr, va = cv_split(len(ctx.data.y_train), cfg.cv_fraction, cfg.seed)
    row = _stitch_row(ctx, q, "group", alpha=q["alpha"], head_start=0.0, epochs=cfg.cv_epochs,
                      train_idx=tr, val_idx=va)
    return dict(row, method="group", alpha=q["alpha"])


def _cv_merge(cfg, info, records, results):
    rows = [dict(r, selected=False, series=f"alpha {r['alpha']:g}") for r in results]
    best: dict = {}
    for k, r in enumerate(rows):  # the first alpha of highest held-out accuracy (cv_alphas order)
        key = (r["pair"], r["layer"])
        if key not in best or r["acc_val"] > rows[best[key]]["acc_val"]:
            best[key] = k
    for k in best.values():
        rows[k]["selected"] = True
    chosen = [r for r in rows if r["selected"]]
    out = _base_merge("alpha_cv", cfg, info, records, rows,
                      {"penalty": "accuracy points", "acc_stitched": "accuracy points",
                       "acc_models_mean": "accuracy points", "acc_val": "accuracy points (held-out training images)"},
                      ("layer", "series"))
    out["summary"] = (summarize([dict(r, series="cross-validated alpha") for r in chosen], ("layer", "series"),
                                "penalty")
                      + summarize(rows, ("layer", "series"), "penalty"))
    out["selected_alpha"] = [{"layer": r["layer"], "pair": r["pair"], "alpha": r["alpha"],
                              "acc_val": r["acc_val"], "penalty": r["penalty"]} for r in chosen]
    return out


def _cv_plot(results, out, plt) -> list:
    from ._plots import _marked, save_figure

    cfg = results["config"]
    layers = [s["layer"] for s in results["sites"]]
    xs = np.arange(len(layers))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for series in dict.fromkeys(s["series"] for s in results["summary"]):
        table = {s["layer"]: s for s in results["summary"] if s["series"] == series}
        m = np.array([table[l]["mean"] if l in table else np.nan for l in layers])
        e = np.array([0.0 if l not in table or table[l]["ci95"] is None else table[l]["ci95"] for l in layers])
        main = series == "cross-validated alpha"
        ax.plot(xs, m, marker="o", lw=2 if main else 0.8, alpha=1 if main else 0.5, label=series)
        if main:
            ax.fill_between(xs, m - e, m + e, alpha=0.2)
    ax.set_xticks(xs, _marked(results, layers), rotation=20, fontsize=7)
    ax.set_ylabel("stitching penalty (accuracy points)")
    ax.set_title("group stitching, alpha by cross-validation (fig. 13)", fontsize=9)
    ax.legend(fontsize=7)
    sel = results["selected_alpha"]
    pos = {l: k for k, l in enumerate(layers)}
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(sel))
    bx.scatter([pos[s["layer"]] + j for s, j in zip(sel, jitter)], [s["alpha"] for s in sel], alpha=0.7)
    bx.set_yscale("log")
    bx.set_xticks(xs, _marked(results, layers), rotation=20, fontsize=7)
    bx.set_ylabel("selected alpha")
    bx.set_title(f"alpha selected per pair (fig. 14), {len(results['pairs'])} pairs", fontsize=9)
    fig.suptitle(f"{cfg['arch']} w{cfg['width']} {cfg['activation']} on {cfg['dataset']}", fontsize=9)
    return [save_figure(fig, out / "alpha_cv.png")]


def _register():
    from ._plots import register_plot
    from ._registry import ExperimentKind

    register_plot("l1_sparsity")(_l1_plot)
    register_plot("alpha_cv")(_cv_plot)
    l1 = ExperimentKind(
        "l1_sparsity", batch_norm=True, n_models=lambda cfg: cfg.models, plan=_plan_with("l1_sparsity", _l1_variants),
        job_kind="l1_sparsity", run=_l1_run, merge=_l1_merge, validate=_validate_pairs, summary_key="series",
        uses=("stitch",),
        presets={"smoke": dict(l1_strengths=(1e-3, 1e-1))})
    cv = ExperimentKind(
        "alpha_cv", batch_norm=True, n_models=lambda cfg: cfg.models, plan=_plan_with("alpha_cv", _cv_variants),
        job_kind="alpha_cv", run=_cv_run, merge=_cv_merge, validate=_cv_validate, summary_key="series",
        uses=("stitch",),
        presets={"smoke": dict(cv_alphas=(1e-2, 1.0), cv_epochs=1), "cpu": dict(cv_epochs=1)})
    return l1, cv


L1_SPARSITY, ALPHA_CV = _register()
