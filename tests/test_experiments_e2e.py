"""End-to-end runs of the three experiments with ``--preset smoke``: on the embedded digits
and on the shared CIFAR-10 (subsampled by the smoke preset; skipped when absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_bridge.experiments._cli import main  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
ROW_KEYS = {"sanity": ("layer", "transform", "penalty"), "stitch": ("layer", "method", "penalty"),
            "similarity": ("layer", "measure", "value")}


@pytest.fixture(scope="module")
def cache(shared_cache):
    # one data cache and zoo for the run (tests/conftest.py): the similarity sweep reuses the
    # models the stitching run trained, and CIFAR-10 is decoded once
    return shared_cache


def _run(experiment, out, cache, *extra, capsys=None):
    code = main([experiment, "--preset", "smoke", "--out", str(out), "--cache-dir", str(cache),
                 "--no-progress", "--json", *extra])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    if capsys is not None:  # --json prints the same document
        assert json.loads(capsys.readouterr().out) == res
    assert res["experiment"] == experiment and res["config"]["preset"] == "smoke"
    keys = ROW_KEYS[experiment]
    assert res["rows"], "no rows"
    for r in res["rows"]:
        assert all(k in r for k in keys)
        assert r[keys[-1]] is not None and np.isfinite(r[keys[-1]])
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res["rows"])
    unit = "similarity, 0 to 1" if experiment == "similarity" else "accuracy points"
    assert f"{keys[-1]} [{unit}]" in rows[0]  # the CSV header states the unit
    assert res["units"][keys[-1]] == unit
    for s in res["summary"]:  # one pair or repeat per layer in the smoke preset: no interval
        assert (s["ci95"] is None) == (s["n"] == 1)
    for fig in res["figures"]:
        assert Path(fig).read_bytes()[:4] == b"\x89PNG"
    return res


def _check(res, experiment, n_layers):
    layers = {r["layer"] for r in res["rows"]}
    assert len(layers) == n_layers  # every activation layer of the Myrtle CNN
    if experiment == "sanity":
        assert {r["transform"] for r in res["rows"]} == {"group", "orthogonal"}
        for r in res["rows"]:
            # penalty = accuracy before - after fine-tuning, in accuracy points
            assert r["penalty"] == pytest.approx(r["acc_before"] - r["acc_after"])
    elif experiment == "stitch":
        assert {r["method"] for r in res["rows"]} == {"full", "rank1", "group"}
        for r in res["rows"]:
            assert 0 <= r["acc_stitched"] <= 100  # accuracy points
            assert r["penalty"] == pytest.approx(r["acc_models_mean"] - r["acc_stitched"])
    else:
        assert {r["measure"] for r in res["rows"]} == {"g_procrustes", "orthogonal_procrustes", "g_cka", "linear_cka"}
        for r in res["rows"]:
            assert -1e-6 <= r["value"] <= 1 + 1e-6
        assert set(res["matrices"]) == {"g_cka", "linear_cka"}


@pytest.mark.parametrize("experiment", ["stitch", "similarity", "sanity"])
def test_smoke_digits(experiment, tmp_path, cache, capsys):
    res = _run(experiment, tmp_path / experiment, cache, capsys=capsys)
    _check(res, experiment, 4)
    assert res["accuracy"]["test_acc_mean"] > 50  # accuracy points, well above chance (10) on digits
    assert res["warnings"] == []


@pytest.mark.cifar
@pytest.mark.parametrize("experiment", ["stitch", "similarity", "sanity"])
def test_smoke_cifar10(experiment, tmp_path, cache):
    if not CIFAR.exists():
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR}")
    res = _run(experiment, tmp_path / experiment, cache, "--dataset", "cifar10", "--data-dir", str(CIFAR))
    _check(res, experiment, 4)
    assert res["config"]["n_train"] == 600  # the smoke preset subsamples CIFAR-10
    # smoke-sized models on CIFAR-10 are near chance: said in the results, not left to the reader
    low = [m for m in res["models"] if m["test_acc"] < 20]
    assert bool(low) == any("near chance" in w for w in res["warnings"])
