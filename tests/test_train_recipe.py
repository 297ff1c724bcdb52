"""The faster CPU training recipe of the ``cpu`` preset (SGD, one-cycle, label smoothing,
channels-last, bfloat16 autocast) and the separate recipe of models without batch norm."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

torch = pytest.importorskip("torch")

from torch_bridge import models  # noqa: E402
from torch_bridge.experiments import ModelSpec, TrainConfig, load_dataset, make_config, train_model  # noqa: E402
from torch_bridge.experiments._train import _lr_at  # noqa: E402

#: The fields a TrainConfig had before the recipe options: a config at the new options' defaults
#: must serialise to exactly these, so the zoo keys of models trained before stay valid.
_PAPER_FIELDS = {"epochs", "batch_size", "lr", "lr_drops", "lr_factor", "holdout", "n_train", "augment"}


def test_default_recipe_serialises_as_before():
    assert set(TrainConfig().to_json()) == _PAPER_FIELDS
    fast = TrainConfig(optimizer="sgd", schedule="onecycle", precision="bfloat16", channels_last=True)
    assert set(fast.to_json()) == _PAPER_FIELDS | {"optimizer", "schedule", "precision", "channels_last"}
    key = lambda cfg: ModelSpec("d", "myrtle", 8, "relu", True, 0, cfg).key  # noqa: E731
    assert key(TrainConfig()) != key(fast)


def test_one_cycle_rises_linearly_then_falls_to_zero():
    cfg = TrainConfig(lr=0.4, schedule="onecycle", warmup=0.25)
    total = 100  # peak after 25 steps
    lrs = [_lr_at(s, total, cfg) for s in range(total)]
    assert lrs[0] == pytest.approx(0.4 / 25)
    assert lrs[24] == pytest.approx(0.4)  # the 25th step runs at the peak
    assert max(lrs) == pytest.approx(0.4)
    assert all(a < b for a, b in zip(lrs[:24], lrs[1:25]))  # strictly up...
    assert all(a > b for a, b in zip(lrs[24:-1], lrs[25:]))  # ...then strictly down
    assert lrs[-1] == pytest.approx(0.4 / 76)  # one step's worth above zero at the last step


def test_paper_schedule_is_unchanged():
    cfg = TrainConfig(lr=1e-3)
    # four drops by half, evenly spaced: after 25, 50 and 75 of 100 steps (the fourth is at the end)
    assert [_lr_at(s, 100, cfg) for s in (0, 24, 25, 50, 99)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4, 1.25e-4])


@pytest.mark.parametrize("bad", [dict(optimizer="rmsprop"), dict(schedule="cosine"), dict(precision="float16"),
                                 dict(warmup=1.0), dict(label_smoothing=1.0), dict(weight_decay=-1.0)])
def test_bad_recipe_options_are_refused_by_name(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=f"'{name}'"):
        TrainConfig(**bad)


def test_fast_recipe_trains_and_hands_back_a_float32_contiguous_model():
    d = load_dataset("digits").subsample(400, 100)
    torch.manual_seed(0)
    net = models.myrtle(width=4, in_channels=1)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.1, optimizer="sgd", schedule="onecycle", weight_decay=5e-4,
                      label_smoothing=0.1, channels_last=True, precision="bfloat16")
    with warnings.catch_warnings():  # on a CPU without native bfloat16 it warns (tested below)
        warnings.simplefilter("ignore", RuntimeWarning)
        info = train_model(net, d, cfg, seed=0, device=torch.device("cpu"), progress=False)
    assert info["val_acc"] > 0.3  # chance is 0.1
    assert info["precision"] == "bfloat16"
    for p in net.parameters():
        assert p.dtype == torch.float32
        assert p.is_contiguous()  # channels-last only while training
    x = torch.randn(5, 1, 8, 8)
    assert net(x).dtype == torch.float32


def test_models_without_batch_norm_get_their_own_recipe():
    cfg = make_config("sanity", "cpu")
    assert cfg.train_plain is not None
    assert cfg.recipe(True) == cfg.train and cfg.recipe(False) == cfg.train_plain
    # the plain recipe is train's with its own values only
    diff = {f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg.train, f.name) != getattr(cfg.train_plain, f.name)}
    assert diff and diff <= {"lr", "epochs", "optimizer", "schedule", "weight_decay", "momentum", "label_smoothing", "warmup"}
    # --epochs applies to both recipes
    cfg5 = make_config("sanity", "cpu", epochs=5)
    assert cfg5.train.epochs == cfg5.train_plain.epochs == 5
    # a preset without a plain recipe uses train for every model, and its job basis is unchanged
    smoke = make_config("sanity", "smoke")
    assert smoke.train_plain is None and smoke.recipe(False) == smoke.train
    assert "train_plain" not in smoke.job_basis()


def test_a_plain_recipe_override_replaces_the_presets_value():
    # the cpu preset's plain recipe sets lr; a user's train_plain lr replaces it (not a clash)
    cfg = make_config("sanity", "cpu", train_plain={"lr": 0.01})
    assert cfg.train_plain.lr == 0.01 and cfg.train.lr == make_config("sanity", "cpu").train.lr


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_native(monkeypatch, native):
    from torch_bridge.experiments import _train

    monkeypatch.setattr(_train, "native_bfloat16", lambda device: native)
    cpu = torch.device("cpu")
    assert _train.resolve_precision("auto", cpu) == ("bfloat16" if native else "float32")
    assert _train.resolve_precision("float32", cpu) == "float32"  # an explicit choice is kept
    assert _train.resolve_precision("bfloat16", cpu) == "bfloat16"


def test_zoo_key_names_the_resolved_precision(monkeypatch):
    # "auto" resolved to float32 gives the key of an explicit float32 recipe (which serialises as
    # before the option existed), and resolved to bfloat16 the key of an explicit bfloat16 one
    from torch_bridge.experiments import _setup, _train

    cfg = make_config("stitch", "smoke", train={"precision": "auto"})
    ctx = _setup.Context(cfg, load_dataset("digits"), torch.device("cpu"), None, None)
    for native, concrete in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(_train, "native_bfloat16", lambda device, n=native: n)
        spec = _setup.model_spec(ctx, 0, True)
        explicit = dataclasses.replace(spec, train=dataclasses.replace(spec.train, precision=concrete))
        assert spec.train.precision == concrete and spec.key == explicit.key


def test_emulated_bfloat16_is_warned_about(monkeypatch):
    from torch_bridge.experiments import _train

    monkeypatch.setattr(_train, "native_bfloat16", lambda device: False)
    d = load_dataset("digits").subsample(100, 50)
    cfg = TrainConfig(epochs=1, batch_size=50, precision="bfloat16")
    with pytest.warns(RuntimeWarning, match="no native bfloat16"):
        train_model(models.myrtle(width=2, in_channels=1), d, cfg, seed=0, device=torch.device("cpu"), progress=False)
    auto = train_model(models.myrtle(width=2, in_channels=1), d, dataclasses.replace(cfg, precision="auto"), seed=0,
                       device=torch.device("cpu"), progress=False)  # no warning: auto picks float32
    assert auto["precision"] == "float32"


def test_sanity_fine_tunes_with_its_own_recipe(monkeypatch, tmp_path):
    # the cpu preset fine-tunes with Adam in small batches (the paper's fine-tuning optimiser), not
    # with the models' one-cycle SGD; epochs and images come from finetune_epochs / finetune_n_train
    cfg = make_config("sanity", "cpu")
    assert cfg.finetune.optimizer == "adam" and cfg.finetune.schedule == "steps"
    assert cfg.finetune.label_smoothing == cfg.train_plain.label_smoothing  # the rest is the plain recipe
    assert make_config("sanity", "cpu", finetune={"lr": 1e-4}).finetune.lr == 1e-4
    assert make_config("stitch", "cpu").finetune is None  # only the sanity experiment fine-tunes
    smoke = make_config("sanity", "smoke")
    assert smoke.finetune is None and "finetune" not in smoke.job_basis()  # earlier job keys stay valid

    from torch_bridge.experiments import _sanity

    seen = []

    def fake_train(model, data, ft_cfg, **kw):
        seen.append(ft_cfg)
        return {"val_acc": 0.0}

    monkeypatch.setattr(_sanity, "train_model", fake_train)
    cfg = make_config("sanity", "smoke", finetune={"optimizer": "adam", "lr": 1e-4}, finetune_epochs=3, progress=False,
                      cache_dir=str(tmp_path), out=str(tmp_path / "out"))
    from torch_bridge.experiments import run_experiment

    run_experiment(cfg, write=False)
    assert seen and all(c.optimizer == "adam" and c.lr == 1e-4 and c.epochs == 3 for c in seen)


def test_a_new_training_code_version_changes_every_zoo_key(monkeypatch):
    from torch_bridge.experiments import _zoo

    spec = ModelSpec("d", "myrtle", 8, "relu", True, 0, TrainConfig())
    assert spec.key == "d-myrtle-w8-relu-bn-e50-3058de7c-s0"  # pinned: the key models of version 1 were saved under
    monkeypatch.setattr(_zoo, "TRAIN_VERSION", 2)
    assert spec.key != "d-myrtle-w8-relu-bn-e50-3058de7c-s0"


def test_results_record_the_fine_tuning_that_ran_and_keys_stay(tmp_path):
    # finetune_epochs and finetune_n_train replace the recipe's epochs and images: results.json's
    # configuration says so, while job keys hash the recipe as given (pinned: the key before this change)
    from torch_bridge.experiments._run import plan_experiment

    cfg = make_config("sanity", "smoke", finetune={"optimizer": "adam", "lr": 1e-4}, finetune_epochs=3,
                      finetune_n_train=100, out=str(tmp_path / "o"), cache_dir=str(tmp_path / "c"), progress=False)
    assert (cfg.to_json()["finetune"]["epochs"], cfg.to_json()["finetune"]["n_train"]) == (3, 100)
    ft = cfg.finetune_recipe()
    assert (ft.optimizer, ft.lr, ft.epochs, ft.n_train) == ("adam", 1e-4, 3, 100)
    keys = {j["label"]: j["key"] for j in plan_experiment(cfg).to_json()["jobs"]}
    assert keys["sanity-r0-1-group"] == "814eb8a2da157b63"
