"""Experiments as jobs: submitit's local executor with two workers, a killed worker, a shared
zoo, interrupted and failing jobs, corrupt caches, and the checks that run before any compute.

Everything runs on a subsample of the embedded digits with tiny networks (seconds per job).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("submitit")

from torch_bridge.experiments import ModelSpec, TrainConfig, get_model, load_dataset, make_config  # noqa: E402
from torch_bridge.experiments import _jobs, _registry, _run  # noqa: E402
from torch_bridge.experiments._cli import main  # noqa: E402
from torch_bridge.experiments._data import CacheWarning  # noqa: E402
from torch_bridge.experiments._locks import claim_state, try_claim  # noqa: E402

TINY = dict(width=4, n_train=500, n_test=120, epochs=2, methods=("full", "group"), stitch_n_train=200,
            bn_images=200, similarity_images=100, progress=False)


def _cfg(experiment, tmp_path, name="out", **kw):
    return make_config(experiment, "smoke", **{**TINY, **kw, "out": str(tmp_path / name),
                                                "cache_dir": str(tmp_path / "cache")})


def _log(out, event):
    path = Path(out) / "jobs" / "jobs.log"
    if not path.exists():
        return []
    return [ln.split()[-1] for ln in path.read_text().splitlines() if ln.split()[3] == event]


def _trainings(zoo):
    log = Path(zoo) / "training.log"
    return [ln.split()[-1] for ln in log.read_text().splitlines()] if log.exists() else []


def _claim_pid(path):
    try:
        return json.loads(path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _same_results(a, b):
    assert a["rows"] == b["rows"]
    assert a["summary"] == b["summary"]
    assert a["models"] == b["models"]
    for m in a.get("matrices", {}):
        np.testing.assert_array_equal(np.asarray(a["matrices"][m]["mean"]), np.asarray(b["matrices"][m]["mean"]))


@pytest.fixture(scope="module")
def inline_stitch(tmp_path_factory):
    """The reference: the whole stitching experiment in this process (3 models, 2 pairs)."""
    tmp = tmp_path_factory.mktemp("inline")
    cfg = _cfg("stitch", tmp, models=3, pairs=2)
    return _run.run_experiment(cfg, write=False)


# --------------------------------------------------------------------------- submitit, local executor
def test_two_local_workers_complete_and_equal_the_inline_run(tmp_path, inline_stitch):
    cfg = _cfg("stitch", tmp_path, models=3, pairs=2)
    res = _run.run_experiment(cfg, executor=_run.ExecutorConfig("local", workers=2))
    _same_results(res, inline_stitch)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["rows"] == res["rows"] and on_disk["executor"] == {"executor": "local", "workers": 2}
    # every model was trained exactly once on the shared zoo (whether both workers took jobs
    # depends on when the second one starts on a loaded machine: not asserted)
    trained = _trainings(tmp_path / "cache" / "zoo")
    assert len(trained) == 3 and len(set(trained)) == 3
    assert sorted(_log(tmp_path / "out", "done")) == sorted(set(_log(tmp_path / "out", "done")))
    st = _jobs.status(tmp_path / "out")
    assert (st["done"], st["pending"], st["failed"], st["running"]) == (st["jobs"], 0, 0, 0)


def test_killing_a_worker_loses_only_its_job(tmp_path, inline_stitch):
    """SIGKILL one worker while it runs a stitching job that the other worker has already
    passed (so nobody takes it over in this run); the rerun does that job only."""
    cfg = _cfg("stitch", tmp_path, models=3, pairs=2)
    out, killed, errors = tmp_path / "out", {}, []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed and not (out / "results.json").exists():
            try:
                order = {f"{j['label']}-{j['key']}": k for k, j in
                         enumerate(json.loads((out / "plan.json").read_text())["jobs"])}
                started = [ln.split() for ln in (out / "jobs" / "jobs.log").read_text().splitlines()]
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            for claim in (out / "jobs").glob("stitch-*.claim"):
                job = claim.name[:-len(".claim")]
                try:
                    info = json.loads(claim.read_text())
                except (OSError, ValueError):
                    continue
                passed = any(w[3] == "start" and int(w[2]) != info["pid"] and order.get(w[4], -1) > order[job]
                             for w in started)
                if passed:
                    os.kill(int(info["pid"]), signal.SIGKILL)
                    # the job it held when it died (it may have moved on since its claim was read)
                    held = [c.name[:-len(".claim")] for c in (out / "jobs").glob("stitch-*.claim")
                            if _claim_pid(c) == info["pid"]]
                    killed.update(info, job=held[0] if held else job)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    try:
        _run.run_experiment(cfg, executor=_run.ExecutorConfig("local", workers=2))
    except _run.JobsUnfinished as e:
        errors.append(str(e))
    t.join()
    assert killed, "no stitching job was seen running"
    done_before = _log(out, "done")
    if errors:  # the killed job is missing: no results.json pretends otherwise
        assert "rerun" in errors[0] and not (out / "results.json").exists()
        assert killed["job"] not in done_before
        assert claim_state(out / "jobs" / f"{killed['job']}.claim")[0] == "stale"  # its owner is dead
        st = _jobs.status(out)
        assert st["done"] == len(done_before) and st["running"] == 0 and st["pending"] >= 1
        res = _run.run_experiment(cfg)  # rerun (inline): resumes
        rerun = _log(out, "done")[len(done_before):]
        assert killed["job"] in rerun and len(rerun) == st["pending"]
    else:  # the other worker reached the job after its owner died and took over the stale claim
        res = json.loads((out / "results.json").read_text())
        rerun = []
    done = done_before + rerun
    assert len(done) == len(set(done)) == _jobs.status(out)["jobs"]  # every job finished exactly once
    assert _log(out, "start").count(killed["job"]) == 2  # the killed attempt is the only work lost
    _same_results(res, inline_stitch)
    trained = _trainings(tmp_path / "cache" / "zoo")
    assert len(trained) == len(set(trained)) == 3


def test_two_processes_on_one_zoo_train_a_model_once(tmp_path, monkeypatch):
    """Two submitit workers ask for the same model at once: one trains, the other waits and loads."""
    import submitit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers inherit it: one torch thread each

    data = load_dataset("digits").subsample(400, 60)
    spec = ModelSpec(f"digits-{data.content_hash}", "myrtle", 2, "relu", True, 0, TrainConfig(epochs=2, batch_size=64))
    ex = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    ex.update_parameters(timeout_min=10)
    jobs = [ex.submit(get_model, spec, data, zoo_dir=tmp_path / "zoo", device=torch.device("cpu"),
                      progress=False, poll_s=0.1) for _ in range(2)]
    (m1, r1), (m2, r2) = (j.result() for j in jobs)
    assert _trainings(tmp_path / "zoo") == [spec.key]
    assert r1 == r2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == sorted(
        [f"{spec.key}.pt", f"{spec.key}.sha256", "training.log"])


# --------------------------------------------------------------------------- resuming in one process
def _patched(monkeypatch, experiment, run):
    kind = _registry.get(experiment)
    module, attr = _registry._ENTRIES[experiment]
    import importlib

    monkeypatch.setattr(importlib.import_module(module, "torch_bridge.experiments"), attr,
                        dataclasses.replace(kind, run=run))
    return kind.run


def test_interrupted_stitching_keeps_finished_jobs(tmp_path, monkeypatch):
    cfg = _cfg("stitch", tmp_path)
    calls = {"n": 0}

    def run(ctx, job):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(ctx, job)

    original = _patched(monkeypatch, "stitch", run)
    with pytest.raises(KeyboardInterrupt):
        _run.run_experiment(cfg)
    first = _log(tmp_path / "out", "done")
    assert len([j for j in first if j.startswith("stitch")]) == 2
    assert not list((tmp_path / "out" / "jobs").glob("*.claim"))  # the interrupted job's claim is released
    monkeypatch.undo()
    _run.run_experiment(cfg)
    rerun = _log(tmp_path / "out", "done")[len(first):]
    assert set(rerun).isdisjoint(first)  # the finished jobs were not redone
    assert len(first) + len(rerun) == _jobs.status(tmp_path / "out")["jobs"]


def test_a_failing_job_is_reported_and_the_rerun_finishes(tmp_path, monkeypatch, capsys):
    argv = ["similarity", "--preset", "smoke", "--width", "4", "--epochs", "1", "--models", "3", "--pairs", "2",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]

    def run(ctx, job):
        if job.params["pair"] == 1:
            raise RuntimeError("simulated failure")
        return original(ctx, job)

    original = _patched(monkeypatch, "similarity", run)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "simulated failure" in err and "rerun" in err
    assert main(["status", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["done", "4"] and lines[3].split()[:2] == ["failed", "1"]
    monkeypatch.undo()
    assert main(argv) == 0
    assert _log(tmp_path / "out", "done")[-1].startswith("similarity-p1")
    assert len(_log(tmp_path / "out", "done")) == 5  # 3 models, 2 pairs, each once


def test_sanity_appends_repeats(tmp_path):
    one = _run.run_experiment(_cfg("sanity", tmp_path, repeats=1, models=2), write=False)
    n1 = len(_log(tmp_path / "out", "done"))
    two = _run.run_experiment(_cfg("sanity", tmp_path, repeats=2, models=2), write=False)
    added = _log(tmp_path / "out", "done")[n1:]
    assert added and all("-r1-" in j or j.startswith("train-s1") for j in added)
    assert two["rows"][:len(one["rows"])] == one["rows"]
    assert {r["repeat"] for r in two["rows"]} == {0, 1}


# --------------------------------------------------------------------------- claims
def test_claims_are_exclusive_and_a_dead_owners_claim_is_stale(tmp_path):
    c = try_claim(tmp_path / "x.claim")
    assert c is not None and try_claim(tmp_path / "x.claim") is None
    assert claim_state(tmp_path / "x.claim")[0] == "held"
    c.release()
    assert claim_state(tmp_path / "x.claim")[0] == "free"
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "y.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                  "token": "t"}))
    assert claim_state(tmp_path / "y.claim")[0] == "stale"
    (tmp_path / "z.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "u"}))
    assert claim_state(tmp_path / "z.claim")[0] == "held"  # another host: only the heartbeat age tells
    assert claim_state(tmp_path / "z.claim", stale_after=-1)[0] == "stale"
    taken = try_claim(tmp_path / "y.claim")
    assert taken is not None and json.loads((tmp_path / "y.claim").read_text())["pid"] == os.getpid()
    taken.release()


# --------------------------------------------------------------------------- corrupt caches, data source
def test_truncated_zoo_model_is_detected_and_retrained(tmp_path):
    data = load_dataset("digits").subsample(200, 40)
    spec = ModelSpec(f"digits-{data.content_hash}", "myrtle", 2, "relu", True, 0, TrainConfig(epochs=1, batch_size=64))
    kw = dict(zoo_dir=tmp_path, device=torch.device("cpu"), progress=False)
    m1, r1 = get_model(spec, data, **kw)
    path = tmp_path / f"{spec.key}.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(CacheWarning, match=str(path)):
        m2, r2 = get_model(spec, data, **kw)
    assert _trainings(tmp_path) == [spec.key, spec.key]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)  # the same deterministic training
    get_model(spec, data, **kw)  # now valid: no warning (filterwarnings=error), no training
    assert len(_trainings(tmp_path)) == 2


def _noise_folder(root, n=12, seed=0):
    from PIL import Image

    from torch_bridge.experiments._data import CIFAR10_CLASSES

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            d = root / split / cls
            d.mkdir(parents=True)
            for k in range(n if split == "train" else 3):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{k}.png")
    return root


def test_corrupt_data_cache_is_rebuilt(tmp_path):
    src = _noise_folder(tmp_path / "noise", n=2)
    d1 = load_dataset("cifar10", src, cache_dir=tmp_path / "c")
    (npy,) = (tmp_path / "c" / "datasets").glob("*/x_train.npy")
    npy.write_bytes(npy.read_bytes()[:-50])
    with pytest.warns(CacheWarning, match=str(npy)):
        d2 = load_dataset("cifar10", src, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(d1.x_train, d2.x_train)
    assert d1.content_hash == d2.content_hash


def test_zoo_key_has_the_data_source():
    d = load_dataset("digits")
    sub = d.subsample(300, 50)
    shuffled = dataclasses.replace(sub, y_train=np.roll(sub.y_train, 1))
    hashes = {d.content_hash, sub.content_hash, shuffled.content_hash}
    assert len(hashes) == 3
    assert d.content_hash == load_dataset("digits").content_hash


def test_noise_images_train_new_models_and_warn_near_chance(tmp_path, capsys):
    """The issue's case: after CIFAR-format data, a folder of random-noise images with the
    same name and shapes must train its own models, and chance-level models are flagged."""
    a = _noise_folder(tmp_path / "a", seed=1)
    b = _noise_folder(tmp_path / "b", seed=2)
    common = ["stitch", "--preset", "smoke", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--json"]
    assert main(common + ["--data-dir", str(a), "--out", str(tmp_path / "oa")]) == 0
    capsys.readouterr()
    assert main(common + ["--data-dir", str(b), "--out", str(tmp_path / "ob")]) == 0
    captured = capsys.readouterr()
    trained = _trainings(tmp_path / "cache" / "zoo")
    assert len(trained) == 4 and len(set(trained)) == 4  # 2 models per data source
    res = json.loads(captured.out)
    assert res["config"]["dataset"] == "cifar10"  # --data-dir implied it
    assert any("near chance" in w for w in res["warnings"])
    assert "warning: " in captured.err and "near chance" in captured.err


# --------------------------------------------------------------------------- fail early (exit 2, no compute)
def _no_compute(tmp_path):
    return not (tmp_path / "cache" / "zoo").exists() and not (tmp_path / "out" / "jobs").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--pairs", "3"], "distinct ordered pairs"),           # 2 models: 2 ordered pairs
    (["--device", "cuda"], "CUDA"),
    (["--device", "cuda:1"], "CUDA"),
    (["--device", "gpu"], "cuda:N"),
    (["--dataset", "digits", "--data-dir", "/somewhere"], "--data-dir implies"),
    (["--executor", "slurm", "--slurm-partition", "x"], "sbatch"),
    (["--workers", "2"], "--executor local"),
    (["--slurm-partition", "p"], "--executor slurm"),
    (["--slurm-time", "60"], "--executor local or slurm"),  # inline has no time limit: not ignored silently
])
def test_bad_input_exits_2_before_any_compute(extra, needle, tmp_path, capsys, monkeypatch):
    if "--device" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    code = main(["stitch", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert _no_compute(tmp_path)


def test_similarity_pairs_are_unordered(tmp_path, capsys):
    code = main(["similarity", "--pairs", "2", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    assert code == 2 and "only 1 distinct pairs" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["--out", "--cache-dir"])
def test_unwritable_out_or_cache_is_refused_first(which, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    paths = {"--out": str(tmp_path / "out"), "--cache-dir": str(tmp_path / "cache")}
    paths[which] = str(blocker / "sub")
    code = main(["stitch", "--out", paths["--out"], "--cache-dir", paths["--cache-dir"]])
    err = capsys.readouterr().err
    assert code == 2 and which in err and str(blocker / "sub") in err and err.count("\n") == 1
    assert not (tmp_path / "cache" / "zoo").exists()


def test_pairs_are_distinct(tmp_path):
    cfg = _cfg("stitch", tmp_path, models=3, pairs=6)
    plan = _run.plan_experiment(cfg)
    pairs = [tuple(p) for p in plan.info["pairs"]]
    assert sorted(pairs) == [(i, j) for i in range(3) for j in range(3) if i != j]
    sim = _run.plan_experiment(_cfg("similarity", tmp_path, models=3, pairs=3))
    assert sorted(tuple(p) for p in sim.info["pairs"]) == [(0, 1), (0, 2), (1, 2)]


def test_status_of_a_folder_without_a_plan_is_bad_input(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "plan.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- warnings
def test_warnings_for_chance_models_and_equal_penalties():
    models = [{"seed": 0, "test_acc": 11.0}, {"seed": 1, "test_acc": 80.0}]
    rows = [{"penalty": 1.5}, {"penalty": 1.5}, {"penalty": 1.5}]
    w = _run.warnings_for({"models": models, "rows": rows}, 10, 2.0)
    assert len(w) == 2 and "seed 0: 11.0" in w[0] and "1 of 2" in w[0] and "every penalty is equal" in w[1]
    assert _run.warnings_for({"models": models[1:], "rows": rows[:1] + [{"penalty": 2.0}]}, 10, 2.0) == []


# --------------------------------------------------------------------------- files
def test_failed_writes_leave_no_temporary_file(tmp_path, monkeypatch):
    from torch_bridge.experiments._locks import atomic_write_text
    from torch_bridge.experiments._train import atomic_save

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        atomic_save({"a": 1}, tmp_path / "m.pt")

    class Boom:
        def __str__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "t.json", Boom())
    assert list(tmp_path.iterdir()) == []


def test_slurm_submission_carries_the_flags(tmp_path, monkeypatch):
    """No cluster here: with stand-in sbatch/srun on PATH, the sbatch script submitit would
    submit asks for the partition, GPUs and time given on the command line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for c in ("sbatch", "srun"):
        (bin_dir / c).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / c).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = _cfg("stitch", tmp_path)
    ex = _run.ExecutorConfig("slurm", workers=4, partition="gpu", gpus_per_node=1, time_min=720)
    _run.preflight(cfg, ex)  # sbatch and srun found: accepted
    text = _run._submitit_executor(cfg, ex)._executor._make_submission_file_text("true", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=720"):
        assert line in text


def test_job_store_states_and_a_damaged_result(tmp_path):
    jobs = [_jobs.make_job("stitch", f"stitch-{k}", {"k": k}, {"data": "x"}) for k in range(4)]
    plan = _jobs.Plan("stitch", tuple(jobs), {})
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_json()))
    store = _jobs.JobStore(tmp_path)
    store.write_result(jobs[0], {"v": 1})
    held = store.claim(jobs[1])  # this (live) process runs it
    store.write_error(jobs[2], "RuntimeError: boom")
    st = _jobs.status(tmp_path)
    assert [st[s] for s in _jobs.STATES] == [1, 1, 1, 1]
    assert st["failed_jobs"] == [{"job": "stitch-2", "error": "RuntimeError: boom"}]
    held.release()
    path = store.root / f"{jobs[0].label}-{jobs[0].key}.json"
    path.write_text(path.read_text()[:20])  # truncated
    with pytest.warns(CacheWarning, match=str(path)):
        assert store.result(jobs[0]) is None
    assert _jobs.status(tmp_path)["pending"] == 3
    assert jobs[0].key != _jobs.make_job("stitch", "stitch-0", {"k": 0}, {"data": "y"}).key  # other data, other key


# --------------------------------------------------------------------------- review (h4review): races and stale caches
def test_a_second_breaker_of_an_unreadable_stale_claim_keeps_the_new_owner(tmp_path):
    """Two workers judge one old, unreadable claim stale (its owner was killed between creating
    and writing it); the first breaks it and claims the job, then the second acts on its earlier
    judgement: it must put the first worker's fresh claim back, not delete it."""
    from torch_bridge.experiments import _locks

    path = tmp_path / "j.claim"
    path.write_text("")
    old = time.time() - 2 * _locks.STALE_AFTER_S
    os.utime(path, (old, old))
    state, info = claim_state(path)
    assert state == "stale"  # what both workers see
    first = try_claim(path)  # worker 1 breaks the stale claim and takes the job
    assert first is not None
    _locks._break(path, info)  # worker 2, a moment later
    assert json.loads(path.read_text())["token"] == first.token
    assert try_claim(path) is None  # still held: nobody else may take it
    first.release()
    assert claim_state(path)[0] == "free"


def test_a_worker_runs_the_plan_of_its_driver(tmp_path, monkeypatch):
    """A worker starts after another command rewrote OUT/plan.json (same --out, other settings):
    it must still run the jobs its driver submitted, not the other plan with its own settings."""
    cfg = _cfg("stitch", tmp_path)
    plan = _run.plan_experiment(cfg)
    Path(cfg.out).mkdir(parents=True)
    ran = []
    monkeypatch.setattr(_run, "_execute", lambda cfg: lambda job: ran.append(job.key) or {"x": 1})

    class FakeJob:
        job_id = "fake"

        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def result(self):
            other = _jobs.Plan("stitch", (_jobs.make_job("stitch", "other", {"k": 1}, {}),), {})
            (Path(cfg.out) / "plan.json").write_text(json.dumps(other.to_json()))
            return self.fn(*self.args)

    class FakeExecutor:
        def submit(self, fn, *args):
            return FakeJob(fn, args)

    monkeypatch.setattr(_run, "_submitit_executor", lambda cfg, ex: FakeExecutor())
    assert _run._run_jobs(cfg, plan, _run.ExecutorConfig("local", workers=1)) == []
    assert ran == [j.key for j in plan.jobs]


def test_an_image_replaced_in_a_folder_is_decoded_again(tmp_path):
    """The decoded-data cache of an ImageFolder tree must notice a file changed inside it (the
    tree's own mtime does not change), else the old images are used under the new data."""
    from PIL import Image

    src = _noise_folder(tmp_path / "noise", n=2)
    d1 = load_dataset("cifar10", src, cache_dir=tmp_path / "c")
    st = src.stat()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(src / "train" / "cat" / "0.png")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    d2 = load_dataset("cifar10", src, cache_dir=tmp_path / "c")
    assert d2.content_hash != d1.content_hash
    black = [(d.x_train.reshape(len(d.x_train), -1).max(1) == 0).sum() for d in (d1, d2)]
    assert black == [0, 1]  # the new all-black image is used


def test_a_claim_from_another_pid_namespace_is_not_judged_by_its_pid(tmp_path):
    """A container on this host with the same hostname but its own pids: its worker's pid is
    not visible here, which must not make its fresh claim look abandoned."""
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    path = tmp_path / "c.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pidns": "pid:[1]", "pid": dead, "token": "t"}))
    assert claim_state(path)[0] == "held" and try_claim(path) is None
    assert claim_state(path, stale_after=-1)[0] == "stale"  # its heartbeat still decides
    c = try_claim(tmp_path / "own.claim")
    assert json.loads((tmp_path / "own.claim").read_text())["pidns"] == os.readlink("/proc/self/ns/pid")
    c.release()
