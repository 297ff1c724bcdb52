"""Loss barriers between independently trained models, with and without alignment and REPAIR.

On the same pairs in one run: no alignment; permutation-only weight matching (plain Git
Re-Basin weight matching over the spec's permutation classes, written here; and groupcalc's
weight-matching element with its scalings and signs dropped); groupcalc's full-group
alignment (``align(method="weights")``, also with ``balance=False``, and
``method="activations"``); and the ``rebasin`` package (``pip install rebasin``, the ``bench``
extra) where it installs. Each with and
without REPAIR, with the time of each alignment. Pairs: digits MLPs with ReLU, tanh and
LeakyReLU(-1) (two seeds each), a CIFAR-10 ResNet20 (small width, a few epochs, the shared
data; ``--cifar PATH``).

    python benchmarks/bench_merge.py                       # digits MLPs
    python benchmarks/bench_merge.py --only digits --width 256 --pairs 0-1,2-3,4-5 --activations relu
    python benchmarks/bench_merge.py --cifar ../shared/datasets/cifar10-jpeg.tar.gz --only resnet20

Prints one row per (pair, method) and a markdown table (``--markdown``); ``--json FILE``
writes every figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_bridge.experiments import TrainConfig, load_dataset, train_model  # noqa: E402
from torch_bridge.experiments._data import Normalizer, batches  # noqa: E402
from torch_bridge.merge import align_models, barrier, evaluate  # noqa: E402
from torch_bridge.models import mlp, resnet20  # noqa: E402
from torch_bridge.symmetry import Monomial, MonomialElement, SymmetryElement, symmetry_spec, weight_distance  # noqa: E402


# Permutation-only baselines -------------------------------------------------------------------

def _rows(t, b):
    x = t.detach().double()
    if b.part is not None:
        j, G = b.part
        rows = x.shape[0] // G
        x = x.narrow(0, j * rows, rows)
    r = b.repeat
    return x.movedim(b.dim, 0).narrow(0, b.offset * r, b.length * r).reshape(b.length, -1)


def _classes(spec):
    names = {s.name for s in spec.sites}
    out = {}
    for s in spec.sites:
        if not isinstance(s.group, Monomial) or not s.group.permutations:
            continue
        holder = s.name if s.permutation == "free" else s.permutation
        if holder == "fixed" or holder not in names:
            continue
        out.setdefault(holder, []).append(s)
    return out


def _tensor(model, fqn):
    mod, _, name = fqn.rpartition(".")
    m = model.get_submodule(mod) if mod else model
    return m._parameters[name] if name in m._parameters else m._buffers[name]


def permutation_matching(spec, model_a, model_b, max_iter=100, seed=0):
    """Git Re-Basin weight matching (Ainsworth et al. 2023, algorithm 1) with permutations only:
    coordinate descent over the permutation classes, each a linear assignment maximising
    sum_i <a_i, b_pi(i)> over every tensor row bound to the class, the others held fixed."""
    from scipy.optimize import linear_sum_assignment

    classes = _classes(spec)
    perms = {h: torch.arange(ss[0].size) for h, ss in classes.items()}

    def element(skip=None):
        els = {}
        for h, ss in classes.items():
            p = torch.arange(ss[0].size) if h == skip else perms[h]
            for s in ss:
                els[s.name] = MonomialElement(p, torch.ones(s.size, dtype=torch.float64))
        return SymmetryElement(els)

    rng = torch.Generator().manual_seed(seed)
    for _ in range(max_iter):
        changed = False
        for i in torch.randperm(len(classes), generator=rng).tolist():
            h = list(classes)[i]
            names = {s.name for s in classes[h]}
            moved = spec.act(element(skip=h), model_b)
            cost = None
            for fqn, bounds in spec.bindings.items():
                for b in bounds:
                    if b.site in names:
                        c = _rows(_tensor(model_a, fqn), b) @ _rows(_tensor(moved, fqn), b).T
                        cost = c if cost is None else cost + c
            if cost is None:
                continue
            _, cols = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
            new = torch.as_tensor(cols)
            old_obj = cost[torch.arange(len(cols)), perms[h]].sum()
            if float(cost[torch.arange(len(cols)), new].sum()) > float(old_obj) + 1e-12 * abs(float(old_obj)):
                perms[h], changed = new, True
        if not changed:
            break
    return spec.act(element(), model_b)


def drop_scalings(spec, g):
    """groupcalc's element with every monomial site's scalings set to 1 (its permutations kept)."""
    out = {}
    for k, v in g.items():
        out[k] = MonomialElement(v.perm, torch.ones_like(v.scale)) if isinstance(v, MonomialElement) else v
    return SymmetryElement(out)


# Pairs ----------------------------------------------------------------------------------------

def digits_pair(activation, seeds, width, epochs, device):
    data = load_dataset("digits")
    models = []
    for s in seeds:
        torch.manual_seed(s)
        m = mlp([64, width, width, width, 10], activation=activation).to(device)
        train_model(m, data, TrainConfig(epochs=epochs, batch_size=32), seed=s, device=device, progress=False)
        models.append(m.eval())
    norm = Normalizer(data, device)
    evals = list(batches(data.x_test, data.y_test, 360, norm))
    stats = list(batches(data.x_train[:1000], data.y_train[:1000], 250, norm))
    return models, evals, stats


def cifar_pair(path, seeds, width, epochs, n_train, device, cache):
    data = load_dataset("cifar10", path).subsample(n_train=n_train, n_test=2000, seed=0)
    models = []
    for s in seeds:
        f = Path(cache) / f"bench_merge_resnet20_w{width}_e{epochs}_n{n_train}_s{s}.pt"
        torch.manual_seed(s)
        m = resnet20(width=width).to(device)
        if f.exists():
            m.load_state_dict(torch.load(f, map_location=device, weights_only=True))
        else:
            t0 = time.perf_counter()
            train_model(m, data, TrainConfig(epochs=epochs, batch_size=64, lr=2e-3), seed=s, device=device,
                        progress=False)
            print(f"  trained resnet20 w{width} seed {s} in {time.perf_counter() - t0:.0f} s", flush=True)
            f.parent.mkdir(parents=True, exist_ok=True)
            torch.save(m.state_dict(), f)
        models.append(m.eval())
    norm = Normalizer(data, device)
    evals = list(batches(data.x_test, data.y_test, 500, norm))
    stats = list(batches(data.x_train[:1000], data.y_train[:1000], 250, norm))
    return models, evals, stats


def gpt_pair(seeds, steps, device, n_embd=64, n_layer=2, n_head=4, seq=64):
    """Two character-level GPT-2 models trained on the Python documentation topics that ship
    with CPython (``pydoc_data.topics``), held-out text for the barrier."""
    from pydoc_data.topics import topics
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    text = "\n".join(topics[k] for k in sorted(topics))
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train, held = ids[:split], ids[split:]

    def windows(t, n, g):
        starts = torch.randint(0, len(t) - seq - 1, (n,), generator=g)
        x = torch.stack([t[s:s + seq] for s in starts])
        y = torch.stack([t[s + 1:s + seq + 1] for s in starts])
        return x, y

    cfg = dict(vocab_size=len(chars), n_positions=seq, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0)
    models = []
    for s in seeds:
        torch.manual_seed(s)
        m = GPT2LMHeadModel(GPT2Config(**cfg)).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(100 + s)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = windows(train, 32, g)
            loss = torch.nn.functional.cross_entropy(m(x).logits.reshape(-1, len(chars)), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  trained GPT-2 ({n_layer} layers, {n_embd} wide) seed {s}: {steps} steps in "
              f"{time.perf_counter() - t0:.0f} s, last loss {float(loss):.3f}", flush=True)
        models.append(m.eval())
    g = torch.Generator().manual_seed(7)
    evals = [windows(held, 32, g) for _ in range(8)]
    stats = [windows(train, 32, g) for _ in range(8)]
    return models, evals, stats


# Methods --------------------------------------------------------------------------------------

def aligned_copies(a, b, stats, use_rebasin, orders=1):
    """method -> ([aligned copies of model_b], seconds per alignment, note). Both weight
    matchings are coordinate descents whose local optimum depends on the order of the classes:
    each is run with ``orders`` orders (seeds 0, 1, ...), one copy per order, so that the rows
    compare groups, not luck with one order."""
    from torch_bridge.symmetry import align

    x = stats[0][0]
    spec = symmetry_spec(a, (x,))
    out = {"none": ([b], 0.0, "")}
    t0 = time.perf_counter()
    out["perm WM (Git Re-Basin)"] = ([permutation_matching(spec, a, b, seed=s) for s in range(orders)],
                                     (time.perf_counter() - t0) / orders, "")
    t0 = time.perf_counter()
    gs = [align(a, b, (x,), method="weights", spec=spec, seed=s) for s in range(orders)]
    secs = (time.perf_counter() - t0) / orders
    out["groupcalc weights"] = ([spec.act(g, b) for g in gs], secs, "")
    out["groupcalc weights, signs/scalings dropped"] = ([spec.act(drop_scalings(spec, g), b) for g in gs], secs, "")
    # the distance to model a in its own frame (before balancing was the default): for comparison
    t0 = time.perf_counter()
    gs = [align(a, b, (x,), method="weights", spec=spec, seed=s, balance=False) for s in range(orders)]
    out["groupcalc weights, balance=False"] = ([spec.act(g, b) for g in gs], (time.perf_counter() - t0) / orders, "")
    moved, rep, secs = align_models(a, b, stats, "activations", spec=spec)
    out["groupcalc activations"] = ([moved], secs, "")
    if use_rebasin:
        try:
            from rebasin import PermutationCoordinateDescent

            bb = copy.deepcopy(b)
            t0 = time.perf_counter()
            pcd = PermutationCoordinateDescent(a, bb, x)
            pcd.rebasin()
            secs = time.perf_counter() - t0
            with torch.no_grad():
                same = float((bb(x) - b(x)).abs().max() / b(x).abs().max())
            out["rebasin"] = ([bb.eval()], secs, f"function changed by {same:.2g}" if same > 1e-4 else "")
        except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash
            out["rebasin"] = ([], 0.0, f"failed: {type(e).__name__}: {str(e)[:80]}")
    return out


def run_pair(name, a, b, evals, stats, alphas, use_rebasin, orders=1):
    """One row per (method, REPAIR): the mean barrier over the method's copies (one per class
    order), its range, and the barrier of the copy closest to model a in weight distance (what
    ``align(..., restarts=orders)`` would return)."""
    import numpy as np

    rows = []
    acc_a, acc_b = evaluate(a, evals)[1], evaluate(b, evals)[1]
    print(f"{name}: test accuracy of the endpoints {100 * acc_a:.1f}% and {100 * acc_b:.1f}%", flush=True)
    for method, (copies, secs, note) in aligned_copies(a, b, stats, use_rebasin, orders).items():
        dists = [weight_distance(a, m) for m in copies]
        for rep in (False, True):
            if not copies:
                rows.append(dict(pair=name, method=method, repair=rep, barrier=None, acc_barrier=None, mid_acc=None,
                                 seconds=secs, distance=None, note=note))
                continue
            rs = [barrier(a, m, evals, alphas, repair=rep, stats_data=stats) for m in copies]
            bl = [r.loss_barrier for r in rs]
            best = int(np.argmin(dists))
            r = rs[best]
            row = dict(pair=name, method=method, repair=rep, barrier=float(np.mean(bl)), barrier_min=min(bl),
                       barrier_max=max(bl), barrier_closest=r.loss_barrier, orders=len(copies),
                       acc_barrier=float(np.mean([q.accuracy_barrier for q in rs])),
                       mid_acc=r.accuracy[len(r.alphas) // 2], seconds=secs, distance=float(np.mean(dists)),
                       note=note, acc_a=acc_a, acc_b=acc_b, alphas=list(r.alphas), loss=list(r.loss),
                       accuracy=list(r.accuracy))
            rows.append(row)
            print(f"{name:<22}{method:<44}{'REPAIR' if rep else '':<8}{_f(row['barrier']):>9}"
                  f" [{_f(row['barrier_min'])}-{_f(row['barrier_max'])}]{_f(row['acc_barrier'], 100):>9}"
                  f"{_f(row['seconds']):>8} {note}", flush=True)
    return rows


def _f(v, scale=1.0):
    return "-" if v is None else f"{scale * v:.3f}"


def plot_pairs(rows, folder):
    """One PNG per pair: the loss along the path for every method, without (solid) and with
    (dashed) REPAIR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for r in rows:
        if r["pair"] not in pairs:
            pairs.append(r["pair"])
    for pair in pairs:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["pair"] == pair)
                   if "dropped" not in m and m != "rebasin"]
        for i, m in enumerate(methods):
            for r in rows:
                if r["pair"] == pair and r["method"] == m and r.get("loss"):
                    ax.plot(r["alphas"], r["loss"], "--" if r["repair"] else "-", color=f"C{i}",
                            label=m if not r["repair"] else None)
        ax.set_xlabel("alpha (0: model a, 1: model b aligned)")
        ax.set_ylabel("test loss")
        ax.set_title(f"{pair}: solid no REPAIR, dashed REPAIR", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = "".join(c if c.isalnum() else "_" for c in pair).strip("_").lower()
        fig.savefig(folder / f"{name}.png", dpi=110)
        plt.close(fig)
        print(f"figure: {folder / f'{name}.png'}")


def markdown(rows):
    lines = ["| pair | method | barrier: mean [min-max] | closest | + REPAIR: mean [min-max] | acc. barrier (pts) "
             "| + REPAIR | weight distance | align time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r["pair"], r["method"], r["repair"]): r for r in rows}
    seen = []
    for r in rows:
        if (r["pair"], r["method"]) not in seen:
            seen.append((r["pair"], r["method"]))

    def spread(r):
        if r["barrier"] is None:
            return "-"
        if r.get("orders", 1) == 1:
            return _f(r["barrier"])
        return f"{_f(r['barrier'])} [{_f(r['barrier_min'])}-{_f(r['barrier_max'])}]"

    for pair, method in seen:
        p, q = keyed[(pair, method, False)], keyed[(pair, method, True)]
        note = f" ({p['note']})" if p["note"] else ""
        acc = next((f" ({100 * r['acc_a']:.0f}/{100 * r['acc_b']:.0f}%)" for r in rows
                    if r["pair"] == pair and "acc_a" in r), "")
        lines.append(f"| {pair}{acc} | {method}{note} | {spread(p)} | {_f(p.get('barrier_closest'))} | {spread(q)} | "
                     f"{_f(p['acc_barrier'], 100)} | {_f(q['acc_barrier'], 100)} | {_f(p['distance'])} | "
                     f"{_f(p['seconds'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("digits", "resnet20", "gpt"), default=None)
    ap.add_argument("--gpt-steps", type=int, default=600, help="training steps of each GPT-2 model")
    ap.add_argument("--width", type=int, default=64, help="hidden width of the digits MLPs")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the digits MLPs")
    ap.add_argument("--pairs", default="0-1,2-3", help="seed pairs of the digits MLPs, e.g. 0-1,2-3,4-5")
    ap.add_argument("--activations", default="relu,tanh,leaky_relu_-1",
                    help="digits MLP activations: any of relu, tanh, leaky_relu_-1 (comma-separated)")
    ap.add_argument("--cifar", default=None, help="CIFAR-10 data for the ResNet20 pair")
    ap.add_argument("--resnet-width", type=int, default=8)
    ap.add_argument("--resnet-epochs", type=int, default=4)
    ap.add_argument("--resnet-train", type=int, default=10000, help="CIFAR-10 training images")
    ap.add_argument("--cache", default=str(Path("~/.cache/groupcalc/bench_merge").expanduser()))
    ap.add_argument("--alphas", type=int, default=11)
    ap.add_argument("--orders", type=int, default=6,
                    help="class orders (seeds) each weight matching is run with; mean, range and closest reported")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-rebasin", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--figures", default=None, help="folder for one loss-along-the-path PNG per pair")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    use_rebasin = not args.no_rebasin
    if use_rebasin:
        try:
            import rebasin  # noqa: F401
        except ImportError:
            print("rebasin is not installed (pip install rebasin): its rows are left out")
            use_rebasin = False
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    rows = []
    if args.only in (None, "digits"):
        acts = {"relu": ("relu", "ReLU"), "tanh": ("tanh", "tanh"),
                "leaky_relu_-1": (("leaky_relu", {"negative_slope": -1.0}), "LeakyReLU(-1)")}
        wanted = args.activations.split(",")
        unknown = [a for a in wanted if a not in acts]
        if unknown:
            ap.error(f"argument --activations: unknown {unknown[0]!r}; choose from {', '.join(acts)}")
        try:
            pairs = [tuple(int(v) for v in p.split("-")) for p in args.pairs.split(",")]
        except ValueError:
            ap.error(f"argument --pairs: expected seed pairs like 0-1,2-3, not {args.pairs!r}")
        if any(len(p) != 2 for p in pairs):
            ap.error(f"argument --pairs: expected seed pairs like 0-1,2-3, not {args.pairs!r}")
        for act, label in (acts[a] for a in wanted):
            for seeds in pairs:
                (a, b), evals, stats = digits_pair(act, seeds, args.width, args.epochs, device)
                rows += run_pair(f"MLP {label} s{seeds[0]}-{seeds[1]}", a, b, evals, stats, args.alphas, use_rebasin, args.orders)
    if args.only in (None, "resnet20"):
        if args.cifar is None or not Path(args.cifar).exists():
            print("ResNet20 pair skipped: pass --cifar PATH (e.g. ../shared/datasets/cifar10-jpeg.tar.gz)")
        else:
            (a, b), evals, stats = cifar_pair(args.cifar, (0, 1), args.resnet_width, args.resnet_epochs,
                                              args.resnet_train, device, args.cache)
            rows += run_pair(f"ResNet20 w{args.resnet_width}", a, b, evals, stats, args.alphas, use_rebasin, args.orders)
    if args.only in (None, "gpt"):
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("GPT-2 pair skipped: transformers is not installed")
        else:
            (a, b), evals, stats = gpt_pair((0, 1), args.gpt_steps, device)
            rows += run_pair("GPT-2 char (pydoc topics)", a, b, evals, stats, args.alphas, False, args.orders)
    if args.figures:
        plot_pairs(rows, args.figures)
    if args.markdown:
        print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
