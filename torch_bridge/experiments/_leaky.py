"""The LeakyReLU slope sweep (appendix D.3, table 3, figure 8): stitching penalties of ResNet20s
with LeakyReLU activations of several negative slopes s.

For every slope the group stitch uses the group the engine derives for
``leaky_relu(negative_slope=s)`` (:func:`groupcalc.group`), not a table: for s != +-1 it is
G_ReLU (permutations and positive scalings), for s = -1 (|x|) the scalings include sign flips,
and for s = 1 the activation is linear, the group is GL_n and the group stitch is the full
stitch. One job trains one model of one slope, or stitches one pair of one slope at one layer
with one method (the jobs of :mod:`._stitch` for that slope's configuration).
"""

from __future__ import annotations

from dataclasses import replace

from ._activation import activation_text
from ._config import ExperimentConfig, summarize

__all__ = ["LEAKY_SWEEP", "slope_config"]


def slope_config(cfg: ExperimentConfig, slope: float) -> ExperimentConfig:
    """The stitching configuration of one slope."""
    return replace(cfg, experiment="stitch", activation=activation_text("leaky_relu", {"negative_slope": slope}))


_CONTEXTS: dict = {}


def _slope_context(ctx, slope: float):
    """The context of one slope's configuration, sharing the data of ``ctx`` (one per process)."""
    from ._setup import Context

    sub = slope_config(ctx.cfg, slope)
    key = (id(ctx), sub)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = Context(sub, ctx.data, ctx.device, ctx.zoo_dir, ctx.normalizer)
    return _CONTEXTS[key]


def _validate(cfg: ExperimentConfig) -> None:
    if cfg.activation not in ("relu", "leaky_relu"):
        raise ValueError(f"Argument 'activation' is {cfg.activation!r}, but the LeakyReLU sweep sets the "
                         f"activation itself (leaky_relu at each of 'slopes'); drop --activation.")
    if len(set(cfg.slopes)) != len(cfg.slopes):
        raise ValueError(f"Argument 'slopes' repeats a slope: {cfg.slopes!r}.")
    from ._stitch import _validate as stitch_validate

    stitch_validate(cfg)


def _group_of(slope: float) -> dict:
    from ._sanity import engine_group
    from ._stitch import _group_info, stitch_constraint

    text = activation_text("leaky_relu", {"negative_slope": slope})
    g = engine_group(text)
    info = _group_info(stitch_constraint(text))
    return {"slope": slope, "activation": text, "kind": g.kind,
            "sign_flips": bool(getattr(g, "negative_scalings", False)), "stitch": info,
            "description": g.describe() if hasattr(g, "describe") else str(g)}


def _plan(ctx, specs) -> tuple[list, dict]:
    from ._jobs import make_job
    from ._setup import model_spec
    from ._stitch import STITCH

    cfg = ctx.cfg
    basis = cfg.job_basis()
    jobs, infos = [], []
    for s in cfg.slopes:
        sctx = _slope_context(ctx, s)
        sspecs = [model_spec(sctx, seed, True) for seed in range(cfg.seed, cfg.seed + cfg.models)]
        for sp in sspecs:
            jobs.append(make_job("leaky_sweep", f"train-slope{s!r}-s{sp.seed}",
                                 {"op": "train", "slope": s, "model": sp.key, "seed": sp.seed}, basis))
        sjobs, sinfo = STITCH.plan(sctx, sspecs)
        for j in sjobs:
            jobs.append(make_job("leaky_sweep", f"slope{s!r}-{j.label}", {"op": "stitch", "slope": s, **j.params},
                                 basis))
        infos.append({"slope": s, "sites": sinfo["sites"], "pairs": sinfo["pairs"], "group": _group_of(s)})
    return jobs, {"slopes": infos}


def _run_job(ctx, job) -> dict:
    from ._jobs import Job
    from ._setup import zoo_model
    from ._stitch import _run_job as stitch_job

    q = dict(job.params)
    op, slope = q.pop("op"), q.pop("slope")
    sctx = _slope_context(ctx, slope)
    if op == "train":
        _, rec = zoo_model(sctx, q["seed"], True)
        if rec["key"] != q["model"]:
            raise RuntimeError(f"zoo model {rec['key']!r} does not match the planned {q['model']!r}")
        return dict(rec, slope=slope)
    return dict(stitch_job(sctx, Job("stitch", job.label, q, job.key)), slope=slope)


def _merge(cfg: ExperimentConfig, info: dict, records: list, results: list) -> dict:
    from ._setup import accuracy_summary, records_in_points

    models = [r for r in results if "test_acc" in r and "penalty" not in r]
    rows = [r for r in results if "penalty" in r]
    groups = {g["slope"]: g["group"] for g in info["slopes"]}
    for r in rows:
        r["group_kind"] = groups[r["slope"]]["kind"]
    by_slope = []
    for g in info["slopes"]:
        acc = accuracy_summary([m for m in models if m["slope"] == g["slope"]])
        by_slope.append({"slope": g["slope"], **acc, "group_kind": g["group"]["kind"],
                         "sign_flips": g["group"]["sign_flips"]})
    summary = summarize(rows, ("slope", "layer", "method"), "penalty")
    for s in summary:
        s["series"] = f"s={s['slope']:g} {s['method']}"
    return {
        "experiment": "leaky_sweep",
        "config": cfg.to_json(),
        "groups": [g["group"] for g in info["slopes"]],
        "sites": info["slopes"][0]["sites"],
        "pairs": {str(g["slope"]): g["pairs"] for g in info["slopes"]},
        "models": records_in_points(models),
        "accuracy": accuracy_summary(models),
        "accuracy_by_slope": by_slope,
        "units": {k: "accuracy points" for k in ("penalty", "acc_stitched", "acc_models_mean",
                                                 "acc_relaxed_before_rounding", "test_acc_mean")},
        "rows": rows,
        "summary": summary,
    }


def _plot(results: dict, out, plt) -> list:
    import numpy as np

    from ._plots import _marked, _residual_note, save_figure

    cfg = results["config"]
    methods = list(dict.fromkeys(r["method"] for r in results["summary"]))
    layers = [s["layer"] for s in results["sites"]]
    accs = {a["slope"]: a for a in results["accuracy_by_slope"]}
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), squeeze=False, sharey=True)
    xs = np.arange(len(layers))
    for ax, method in zip(axes[0], methods):
        for a in results["accuracy_by_slope"]:
            s = a["slope"]
            table = {r["layer"]: r for r in results["summary"] if r["slope"] == s and r["method"] == method}
            m = np.array([table[l]["mean"] if l in table else np.nan for l in layers])
            e = np.array([0.0 if l not in table or table[l]["ci95"] is None else table[l]["ci95"] for l in layers])
            grp = {"general_linear": "GL", "monomial": "PD, G has sign flips" if a["sign_flips"] else "PD"}.get(a["group_kind"],
                                                                                              a["group_kind"])
            ax.plot(xs, m, marker="o", label=f"s={s:g} ({grp}; acc {a['test_acc_mean']:.1f})")
            ax.fill_between(xs, m - e, m + e, alpha=0.15)
        ax.set_xticks(xs, _marked(results, layers), rotation=60 if len(layers) > 6 else 20, fontsize=7)
        _residual_note(ax, results)
        ax.set_xlabel("activation layer")
        ax.set_title(f"{method} stitching", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("stitching penalty (accuracy points)")
    fig.suptitle(f"LeakyReLU slope sweep (fig. 8), {cfg['arch']} w{cfg['width']} on {cfg['dataset']}; "
                 f"group per slope from the engine", fontsize=9)
    return [save_figure(fig, out / "leaky_sweep_penalties.png")]


def _register():
    from ._plots import register_plot
    from ._registry import ExperimentKind

    register_plot("leaky_sweep")(_plot)
    paper = (1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 1.0)
    return ExperimentKind(
        "leaky_sweep", batch_norm=True, n_models=lambda cfg: 0, plan=_plan, job_kind="leaky_sweep", run=_run_job,
        merge=_merge, validate=_validate, summary_key="series", uses=("stitch",),
        presets={"smoke": dict(slopes=(-1.0, 0.01, 1.0), methods=("full", "group")),
                 # 7 of ResNet20's 19 sites (the stem, then inside/after the last block of each stage)
                 "cpu": dict(arch="resnet20", slopes=(-1.0, 1e-3, 0.1, 0.5, 0.9, 1.0), methods=("group",),
                             layers=("act1", "layers.0.2.act1", "layers.0.2.act2", "layers.1.2.act1",
                                     "layers.1.2.act2", "layers.2.2.act1", "layers.2.2.act2")),
                 "paper": dict(arch="resnet20", width=16, slopes=(-1.0,) + paper, methods=("group",))})


LEAKY_SWEEP = _register()
