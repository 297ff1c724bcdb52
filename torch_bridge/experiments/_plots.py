"""Figures in the style of the paper's (matplotlib, Agg backend): figure 4 (rotation
penalties), figure 1 (stitching penalties) and table 2 / figure 5 (similarities)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_results"]

_LABELS = {"group": "$G_\\sigma$", "orthogonal": "orthogonal", "identity": "identity (control)",
           "full": "full 1x1", "g_procrustes": "$G_\\sigma$-Procrustes",
           "orthogonal_procrustes": "orthogonal Procrustes", "g_cka": "$G_\\sigma$-CKA", "linear_cka": "linear CKA"}


def _label(key: str, activation: str = "") -> str:
    if activation and key in ("group", "g_procrustes", "g_cka"):
        g = f"$G_{{\\mathrm{{{activation.replace('_', ' ')}}}}}$"
        return {"group": g, "g_procrustes": f"{g}-Procrustes", "g_cka": f"{g}-CKA"}[key]
    if key.startswith("rank"):
        return f"rank {key[4:]} 1x1"
    return _LABELS.get(key, key)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write (PNG, 120 dpi) and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return Path(path)


def _series(summary, xkey, gkey):
    layers = list(dict.fromkeys(r[xkey] for r in summary))
    groups = list(dict.fromkeys(r[gkey] for r in summary))
    table = {(r[xkey], r[gkey]): r for r in summary}
    return layers, groups, table


def _ci(table, layer, group) -> float:
    """The interval's half-width, or 0 (no error bar) where there is none (n = 1)."""
    r = table.get((layer, group))
    return 0.0 if r is None or r["ci95"] is None else r["ci95"]


def _marked(results: dict, layers: list) -> list[str]:
    """Layer names with '*' for the sites inside a residual block (as in the paper's figures)."""
    inside = {s["layer"] for s in results.get("sites", []) if s.get("inside_residual")}
    return [f"{l}*" if l in inside else l for l in layers]


def _residual_note(ax, results: dict) -> None:
    if any(s.get("inside_residual") for s in results.get("sites", [])):
        ax.figure.text(0.995, 0.005, "* inside a residual block (remark 3.6)", ha="right", va="bottom", fontsize=7)


def plot_results(results: dict, out_dir: str | Path) -> list[Path]:
    """Write the figures of one results dictionary into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    exp = results["experiment"]
    if exp in _EXTRA:
        return _EXTRA[exp](results, out, plt)
    acc = results.get("accuracy", {})
    ci = acc.get("test_acc_ci95")
    acc_text = f"model accuracy {acc.get('test_acc_mean', float('nan')):.1f}" + \
               ("" if ci is None else f" ± {ci:.1f}") + " accuracy points"
    cfg = results["config"]
    title_tail = f"{cfg['arch']} w{cfg['width']} {cfg['activation']} on {cfg['dataset']}"
    paths = []
    if exp == "sanity":
        layers, groups, table = _series(results["summary"], "layer", "transform")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        w = 0.8 / max(1, len(groups))
        for k, g in enumerate(groups):
            xs = np.arange(len(layers)) + (k - (len(groups) - 1) / 2) * w
            m = [table[(l, g)]["mean"] if (l, g) in table else np.nan for l in layers]
            e = [_ci(table, l, g) for l in layers]
            ax.bar(xs, m, w, yerr=e, capsize=3, label=_label(g, cfg['activation']))
        ax.set_xticks(np.arange(len(layers)), layers, rotation=20)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("pre-activation layer")
        ax.set_ylabel("rotation penalty (accuracy points)")
        ax.set_title(f"Rotation penalties, {title_tail}\n({acc_text})", fontsize=9)
        ax.legend(fontsize=8)
        paths.append(out / "rotation_penalties.png")
    elif exp == "stitch":
        layers, groups, table = _series(results["summary"], "layer", "method")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = np.arange(len(layers))
        for g in groups:
            m = np.array([table[(l, g)]["mean"] if (l, g) in table else np.nan for l in layers])
            e = np.array([_ci(table, l, g) for l in layers])
            ax.plot(xs, m, marker="o", label=_label(g, cfg['activation']))
            ax.fill_between(xs, m - e, m + e, alpha=0.2)
        ax.set_xticks(xs, _marked(results, layers), rotation=60 if len(layers) > 6 else 20, fontsize=7)
        _residual_note(ax, results)
        ax.set_xlabel("activation layer")
        ax.set_ylabel("stitching penalty (accuracy points)")
        ax.set_title(f"Stitching penalties (4.3), {title_tail}\n({acc_text})", fontsize=9)
        ax.legend(fontsize=8)
        paths.append(out / "stitching_penalties.png")
    elif exp == "similarity":
        layers, groups, table = _series(results["summary"], "layer", "measure")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = np.arange(len(layers))
        for g in groups:
            m = np.array([table[(l, g)]["mean"] if (l, g) in table else np.nan for l in layers])
            e = np.array([_ci(table, l, g) for l in layers])
            ax.errorbar(xs, m, yerr=e, marker="o", capsize=3, label=_label(g, cfg['activation']))
        ax.set_xticks(xs, _marked(results, layers), rotation=60 if len(layers) > 6 else 20, fontsize=7)
        _residual_note(ax, results)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("activation layer")
        ax.set_ylabel("similarity")
        ax.set_title(f"Layerwise similarity of pairs of models, {title_tail}", fontsize=9)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out / "similarity_layers.png"))
        mats = results.get("matrices", {})
        if mats:
            fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 3.8), squeeze=False)
            names = _marked(results, [s["layer"] for s in results["sites"]])
            for ax, (m, d) in zip(axes[0], mats.items()):
                mat = np.asarray(d["mean"], dtype=float)
                im = ax.imshow(mat, vmin=0, vmax=1, cmap="magma", origin="lower")
                ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
                ax.set_yticks(range(len(names)), names, fontsize=7)
                ax.set_xlabel("model B layer")
                ax.set_ylabel("model A layer")
                ax.set_title(f"{_label(m, cfg['activation'])} (mean of {d['pairs']} pairs)", fontsize=9)
                fig.colorbar(im, ax=ax, fraction=0.046)
            paths.append(out / "cka_matrices.png")
    else:
        raise ValueError(f"Argument 'results' has an unknown experiment {exp!r}.")
    save_figure(fig, paths[-1])
    return paths


#: experiment name -> plot(results, out_dir, plt) -> [paths], for experiments with figures of
#: their own (filled by the modules that define them, see :func:`register_plot`)
_EXTRA: dict = {}


def register_plot(experiment: str):
    """Decorator: ``plot(results, out_dir, plt) -> list[Path]`` draws ``experiment``'s figures."""
    def deco(fn):
        _EXTRA[experiment] = fn
        return fn
    return deco
