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
@pytest.fixture
def by_value():
    """Pickle this module's functions by value, so that submitit workers (other processes,
    which cannot import the test module) can run the wrappers below."""
    import sys

    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def _wait_for(predicate, what, timeout=300.0):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def _worker_after_barrier(barrier, n, cfg, threads, plan):
    """A worker whose first job waits until all ``n`` workers have started a job: every worker
    takes part however late the executor starts it."""
    from torch_bridge.experiments import _run as run

    make = run._execute

    def execute_factory(cfg):
        execute, first = make(cfg), [True]

        def execute_after_barrier(job):
            if first[0]:
                first[0] = False
                (Path(barrier) / str(os.getpid())).touch()
                _wait_for(lambda: len(list(Path(barrier).iterdir())) >= n, f"{n} workers")
            return execute(job)
        return execute_after_barrier

    run._execute = execute_factory
    return run.worker_main(cfg, threads, plan)


def test_two_local_workers_complete_and_equal_the_inline_run(tmp_path, inline_stitch, monkeypatch, by_value):
    cfg = _cfg("stitch", tmp_path, models=3, pairs=2)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    real_submit = _run._submitit_executor

    def submitit_executor(cfg, ex):
        executor = real_submit(cfg, ex)
        submit = executor.submit
        executor.submit = lambda fn, *args: submit(_worker_after_barrier, str(barrier), 2, *args)
        return executor

    monkeypatch.setattr(_run, "_submitit_executor", submitit_executor)
    res = _run.run_experiment(cfg, executor=_run.ExecutorConfig("local", workers=2))
    _same_results(res, inline_stitch)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["rows"] == res["rows"] and on_disk["executor"] == {"executor": "local", "workers": 2}
    # both workers took jobs (the barrier), and every model was trained exactly once on the shared zoo
    log = (tmp_path / "out" / "jobs" / "jobs.log").read_text().splitlines()
    workers = {ln.split()[2] for ln in log if ln.split()[3] == "done"}
    assert workers == {p.name for p in barrier.iterdir()} and len(workers) == 2
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
    # no temporary file or break lock is left behind (the rerun's worker or the claim's next holder sweeps)
    assert not [p.name for p in (*(out / "jobs").iterdir(), *(tmp_path / "cache" / "zoo").iterdir())
                if p.name.startswith(".")]


def _zoo_worker(role, barrier, spec, data, zoo):
    """``get_model`` in a submitit worker. The ``trainer`` asks first and, holding the model's
    claim, finishes only after the ``waiter`` has found the claim held inside ``get_model``
    (and so waits on it): the lock is met whatever the processes' start times."""
    from torch_bridge.experiments import _zoo

    barrier = Path(barrier)
    if role == "trainer":
        train = _zoo._train

        def train_then_wait(*a, **k):
            record = train(*a, **k)
            _wait_for(lambda: (barrier / "waiter-met-the-claim").exists(), "the waiter")
            return record
        _zoo._train = train_then_wait
    else:
        _wait_for(lambda: (Path(zoo) / f"{spec.key}.lock").exists(), "the trainer's claim")
        claim = _zoo.try_claim

        def try_claim_and_note(*a, **k):
            c = claim(*a, **k)
            if c is None:
                (barrier / "waiter-met-the-claim").touch()
            return c
        _zoo.try_claim = try_claim_and_note
    return _zoo.get_model(spec, data, zoo_dir=zoo, device=torch.device("cpu"), progress=False, poll_s=0.05)


def test_two_processes_on_one_zoo_train_a_model_once(tmp_path, monkeypatch, by_value):
    """Two submitit workers ask for the same model at once: one trains, the other finds its claim
    held, waits and loads."""
    import submitit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers inherit it: one torch thread each

    data = load_dataset("digits").subsample(400, 60)
    spec = ModelSpec(f"digits-{data.content_hash}", "myrtle", 2, "relu", True, 0, TrainConfig(epochs=2, batch_size=64))
    ex = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    ex.update_parameters(timeout_min=10)
    (tmp_path / "barrier").mkdir()
    jobs = [ex.submit(_zoo_worker, role, str(tmp_path / "barrier"), spec, data, str(tmp_path / "zoo"))
            for role in ("trainer", "waiter")]
    (m1, r1), (m2, r2) = (j.result() for j in jobs)
    assert (tmp_path / "barrier" / "waiter-met-the-claim").exists()
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
    (["--finetune-epochs", "3"], "sanity experiment only"),  # stitch has no fine-tuning: not ignored silently
    (["--finetune-images", "100"], "sanity experiment only"),
    (["--slopes", "0.1"], "leaky_sweep experiment only"),
])
def test_bad_input_exits_2_before_any_compute(extra, needle, tmp_path, capsys, monkeypatch):
    if "--device" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    code = main(["stitch", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert _no_compute(tmp_path)


def test_finetune_flags_reach_the_sanity_config(tmp_path, capsys, monkeypatch):
    from torch_bridge.experiments import _run

    seen = {}

    def fake_run(cfg, executor):  # records the configuration and stops before any compute
        seen["cfg"] = cfg
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(_run, "run_experiment", fake_run)
    main(["sanity", "--finetune-epochs", "3", "--finetune-images", "700", "--out", str(tmp_path / "out"),
          "--cache-dir", str(tmp_path / "cache")])
    assert (seen["cfg"].finetune_epochs, seen["cfg"].finetune_n_train) == (3, 700)
    capsys.readouterr()
    code = main(["sanity", "--finetune-images", "0", "--out", str(tmp_path / "o2"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "'--finetune-images' must be a positive integer" in err and err.count("\n") == 1, err


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
    judgement: it must leave the first worker's fresh claim alone."""
    from torch_bridge.experiments import _locks

    path = tmp_path / "j.claim"
    path.write_text("")
    old = time.time() - 2 * _locks.STALE_AFTER_S
    os.utime(path, (old, old))
    state, _, ident = _locks._judge(path, _locks.STALE_AFTER_S)
    assert state == "stale"  # what both workers see
    first = try_claim(path)  # worker 1 breaks the stale claim and takes the job
    assert first is not None
    _locks._break(path, ident)  # worker 2, a moment later
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


# --------------------------------------------------------------------------- breaking stale claims, many contenders
class _Interleaver:
    """Runs worker threads one file-system operation at a time, in an order a seeded random
    schedule picks: every ``os.open/stat/unlink/rename/replace/link`` and ``io.open`` of a
    worker waits until the conductor hands it the turn. The interleaving depends only on the
    seed (no timing), so a schedule that breaks the claims' invariant fails every time."""

    def __init__(self, monkeypatch, seed, no_hard_links=False):
        import io
        import random

        self.cond = threading.Condition()
        self.rng = random.Random(seed)
        self.names, self.waiting, self.finished, self.running, self.trace = set(), set(), set(), None, []
        for mod, attr in [(os, "open"), (os, "stat"), (os, "unlink"), (os, "rename"), (os, "replace"),
                          (os, "link"), (io, "open")]:
            monkeypatch.setattr(mod, attr, self._gated(getattr(mod, attr), attr, no_hard_links))

    def _gated(self, op, label, no_hard_links):
        def gated(*args, **kw):
            name = threading.current_thread().name
            if name in self.names:
                self._turn(name, f"{label} {os.path.basename(str(args[0]))}")
                if label == "link" and no_hard_links:
                    raise OSError(1, "Operation not permitted (no hard links here)")
            return op(*args, **kw)
        return gated

    def _turn(self, name, what):
        with self.cond:
            self.running = None
            self.waiting.add(name)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.running == name)
            self.waiting.discard(name)
            self.trace.append(f"{name}: {what}")

    def run(self, workers: dict) -> dict:
        out = {}

        def body(name, fn):
            try:
                self._turn(name, "start")
                out[name] = fn()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                out[name] = e
            finally:
                with self.cond:
                    self.finished.add(name)
                    self.running = None
                    self.cond.notify_all()

        self.names = set(workers)
        threads = [threading.Thread(target=body, args=(n, f), name=n) for n, f in workers.items()]
        for t in threads:
            t.start()
        with self.cond:
            while True:
                assert self.cond.wait_for(lambda: self.running is None and self.waiting | self.finished == self.names,
                                          timeout=60), self.trace[-5:]
                if self.finished == self.names:
                    break
                self.running = self.rng.choice(sorted(self.waiting))
                self.cond.notify_all()
        for t in threads:
            t.join()
        return out


def _dead_pid():
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def _stale_claim(path, how, dead):
    import socket

    from torch_bridge.experiments import _locks

    if how == "unreadable":  # its owner was killed between creating and writing it
        path.write_text("")
        old = time.time() - 2 * _locks.STALE_AFTER_S
        os.utime(path, (old, old))
    elif how == "dead owner":
        path.write_text(json.dumps({"host": socket.gethostname(), "pidns": _locks._PIDNS, "pid": dead,
                                    "token": "stale"}))
    elif how == "no heartbeat":  # an owner on another host that died
        path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "stale"}))
        old = time.time() - 2 * _locks.STALE_AFTER_S
        os.utime(path, (old, old))
    else:  # "dead breaker": a worker was killed while breaking the claim of a dead owner
        _stale_claim(path, "dead owner", dead)
        (path.parent / f".{path.name}.break-tstale.0").write_text(json.dumps(
            {"host": socket.gethostname(), "pidns": _locks._PIDNS, "pid": dead, "token": "b"}))


@pytest.mark.parametrize("how, n", [("dead owner", 3), ("unreadable", 3), ("no heartbeat", 3), ("dead breaker", 3),
                                     ("dead owner", 4)])
def test_many_workers_breaking_one_stale_claim_never_share_it(tmp_path, monkeypatch, how, n):
    """Three (four) workers meet one stale claim at once. Over many seeded interleavings of their file
    operations (on a file system without hard links), exactly one of them ends up holding the
    claim, the claim file is that worker's, and no break lock is left behind. (The breaking of
    earlier versions, rename aside and link back, fails here: two holders, e.g. seed 7.)"""
    dead = _dead_pid()
    for seed in range(150):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        path = folder / "job.claim"
        _stale_claim(path, how, dead)
        il = _Interleaver(monkeypatch, seed, no_hard_links=True)
        got = il.run({f"w{k}": lambda: try_claim(path) for k in range(n)})
        monkeypatch.undo()
        assert not [g for g in got.values() if isinstance(g, BaseException)], (seed, got)
        holders = [g for g in got.values() if g is not None]
        trace = "\n".join(il.trace)
        assert len(holders) == 1, f"seed {seed}: {len(holders)} holders\n{trace}"
        assert json.loads(path.read_text())["token"] == holders[0].token, f"seed {seed}\n{trace}"
        assert sorted(p.name for p in folder.iterdir()) == ["job.claim"], f"seed {seed}\n{trace}"
        holders[0].release()


def test_a_break_acts_only_on_the_claim_it_judged(tmp_path):
    """A worker that judged claim A stale finds, once it holds A's break lock, another stale
    claim B at the path (A was broken, B's owner died too): B is not its to break (B's own
    breaker may be replacing it right now), and a live break lock stops other breakers."""
    from torch_bridge.experiments import _locks

    dead = _dead_pid()
    path = tmp_path / "job.claim"
    _stale_claim(path, "dead owner", dead)  # token "stale"
    _locks._break(path, "tother")  # judged before: claim "other"
    assert json.loads(path.read_text())["token"] == "stale" and sorted(os.listdir(tmp_path)) == ["job.claim"]
    busy = try_claim(tmp_path / ".job.claim.break-tstale.0")  # a live worker is breaking it
    assert try_claim(path) is None and json.loads(path.read_text())["token"] == "stale"
    busy.release()
    taken = try_claim(path)
    assert taken is not None and json.loads(path.read_text())["token"] == taken.token
    taken.release()


# --------------------------------------------------------------------------- temporary files of killed writers
def test_orphaned_temporary_files_are_swept_by_the_claims_rule(tmp_path):
    from torch_bridge.experiments import _locks

    dead, me, tag = _dead_pid(), os.getpid(), _locks._HOST_TAG
    other = "0" * 8 if tag != "0" * 8 else "1" * 8
    files = {  # name -> (made old, removed)
        f".r.json.tmp{dead}-{tag}-abcdef": (False, True),  # killed writer on this host
        f".x_train.npy.tmp{dead}-{tag}-abcdef.npy": (False, True),
        f".r.json.tmp{me}-{tag}-abcdef": (False, False),  # a live writer
        f".q.json.tmp{me}-{tag}-abcdef": (True, True),  # ... not for stale_after: the pid was reused
        f".s.json.tmp{dead}-{other}-abcdef": (False, False),  # another host: its pid says nothing here
        f".t.json.tmp{dead}-{other}-abcdef": (True, True),  # ... until it is stale_after old
        f".m.pt.tmp{dead}": (False, False),  # no host tag: the age alone tells
        f".n.pt.tmp{dead}": (True, True),
        f".o.json.tmp{dead}-abcdef": (True, True),  # names of earlier versions
        f".c.claim.stale{dead}-abcdef": (True, True),
        ".c.claim.break-tgone.0": (False, True),  # its claim is gone
        ".d.claim.break-tlive.0": (False, False),  # its claim is still there
        "d.claim": (False, False), "r.json": (True, False), ".hidden": (True, False), "a.tmp5": (True, False),
    }
    old = time.time() - 2 * _locks.STALE_AFTER_S
    for name, (aged, _) in files.items():
        (tmp_path / name).write_text(json.dumps({"token": "live", "pid": me}) if name == "d.claim" else "partial")
        if aged:
            os.utime(tmp_path / name, (old, old))
    untagged = {f".n.pt.tmp{dead}", f".o.json.tmp{dead}-abcdef", f".c.claim.stale{dead}-abcdef"}
    removed = _locks.sweep_temporaries(tmp_path, only_tagged=True)  # a folder shared with other programs
    assert sorted(p.name for p in removed) == sorted(n for n, (_, gone) in files.items() if gone and n not in untagged)
    removed = _locks.sweep_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(untagged)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, (_, gone) in files.items() if not gone)
    assert _locks.sweep_temporaries(tmp_path / "missing") == []


def test_taking_a_claim_removes_the_temporary_files_it_covers(tmp_path):
    """Only a claim's holder writes the files of its name, so whoever takes it next removes
    their temporary files, whatever their owner (pid alive or not, any host)."""
    from torch_bridge.experiments import _locks

    key = "digits-abc-myrtle-w2-leaky_relu0.1-bn-e2-1234abcd-s0"
    covered = [f".{key}.pt.tmp{os.getpid()}", f".{key}.partial.pt.tmp12", f".{key}.sha256.tmp12-0a0b0c0d-abcdef"]
    other = [f".{key}0.pt.tmp12", f".{key}-x.pt.tmp12", f"{key}.pt", f".{key}.pt", "other.lock"]
    for name in covered + other:
        (tmp_path / name).write_text("x")
    claim = try_claim(tmp_path / f"{key}.lock")
    assert sorted(os.listdir(tmp_path)) == sorted(other + [f"{key}.lock"])
    claim.release()


def test_a_worker_starting_removes_what_a_killed_writer_left(tmp_path):
    """A process killed with SIGKILL while writing leaves temporary files in OUT and OUT/jobs;
    the next worker on this host removes them before running its jobs."""
    import subprocess
    import sys

    out = tmp_path / "out"
    targets = [out / "plan.json", out / "jobs" / "stitch-0-abc.json"]
    code = ("import os, signal\nfrom torch_bridge.experiments._locks import temp_path\n"
            f"for p in {[str(t) for t in targets]!r}:\n"
            "    t = temp_path(p)\n    t.parent.mkdir(parents=True, exist_ok=True)\n    t.write_text('partial')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = [p.name for p in (*out.iterdir(), *(out / "jobs").iterdir()) if ".tmp" in p.name]
    assert len(left) == 2
    job = _jobs.make_job("stitch", "stitch-0", {"k": 0}, {})
    counts = _jobs.work(_jobs.Plan("stitch", (job,), {}), _jobs.JobStore(out), lambda j: {"v": 1})
    assert counts["ran"] == 1
    assert sorted(os.listdir(out)) == ["jobs"]
    assert sorted(os.listdir(out / "jobs")) == sorted([f"stitch-0-{job.key}.json", "jobs.log"])


# --------------------------------------------------------------------------- code versions in job keys
def test_a_kinds_version_enters_its_job_keys_only_when_bumped(tmp_path, monkeypatch):
    # the keys the code wrote before versions existed (commit 6363d22): version 1 keeps them
    assert _jobs.make_job("stitch", "stitch-x", {"k": 1}, {"data": "d"}).key == "4e05e14bd589b237"
    assert _jobs.make_job("train", "train-s0", {"model": "m", "seed": 0, "batch_norm": True},
                          {"data": "d"}).key == "748740e9a0a0fee1"
    cfg = _cfg("stitch", tmp_path, models=3, pairs=2)
    before = _run.plan_experiment(cfg)
    sanity = _jobs.make_job("sanity", "s", {"k": 1}, {})
    module, attr = _registry._ENTRIES["stitch"]
    import importlib

    monkeypatch.setattr(importlib.import_module(module, "torch_bridge.experiments"), attr,
                        dataclasses.replace(_registry.get("stitch"), version=2))
    after = _run.plan_experiment(cfg)
    assert _registry.job_versions("stitch") == {"stitch": 2} and _registry.job_versions("train") == {}
    assert _registry.job_versions("leaky_sweep") == {"stitch": 2}  # it trains stitching layers with stitch's code
    assert [j.kind for j in before.jobs] == [j.kind for j in after.jobs]
    for a, b in zip(before.jobs, after.jobs):  # the models stay, every stitching job is new
        assert (a.key == b.key) == (a.kind == "train"), (a.label, a.key, b.key)
    assert _jobs.make_job("sanity", "s", {"k": 1}, {}).key == sanity.key  # other kinds keep theirs


def test_registry_versions_are_one_per_job_kind():
    kinds = [_registry.get(n) for n in _registry.names()]
    for k in kinds:
        assert k.job_kind in _registry.names(), k.name  # a job kind is named after its experiment
        assert k.version == _registry.get(k.job_kind).version, k.name  # sharers share its version
        assert set(k.uses) <= set(_registry.names()) - {k.name}, k.name
    with pytest.raises(ValueError, match="'version' of experiment 'stitch' must be a positive integer"):
        dataclasses.replace(kinds[0], name="stitch", version=0)
