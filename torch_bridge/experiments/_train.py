"""Training as in appendix D.1 of the paper, and evaluation.

By default: Adam with PyTorch's defaults, initial learning rate ``lr``, four evenly spaced
drops by a factor 0.5, the paper's augmentation, and the checkpoint with the best accuracy on a
held-out part of the *training* set (the test set is only used to report accuracy).

The ``cpu`` preset trains faster on a CPU with options that leave the paper's setting alone at
their defaults: SGD with Nesterov momentum and weight decay, a one-cycle learning rate (linear
warm-up to ``lr`` over ``warmup`` of the steps, then linear decay to zero), label smoothing,
channels-last weights and bfloat16 autocast (``precision``; the weights, the optimiser and every
evaluation stay in float32). ``precision="auto"`` takes bfloat16 only where the device computes it
natively (a CUDA GPU with bfloat16, a CPU with AVX512): on an AVX2 CPU bfloat16 autocast is
emulated and was measured ten times *slower* than float32 (docs/reproduction.md).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._data import Dataset, Normalizer, batches

__all__ = ["TrainConfig", "train_model", "evaluate", "atomic_save", "resolve_device", "restore_generator",
           "resolve_precision"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (appendix D.1 defaults)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    lr_drops: int = 4
    lr_factor: float = 0.5
    holdout: float = 0.1
    n_train: int | None = None  # subsample the training set (None: all of it)
    augment: bool = True
    # Options of the faster CPU recipe (see the module docstring); at these defaults a
    # configuration is the paper's, and they are left out of its JSON (so zoo keys stay valid).
    optimizer: str = "adam"  # "adam" or "sgd" (Nesterov momentum ``momentum``)
    schedule: str = "steps"  # "steps" (``lr_drops`` halvings) or "onecycle"
    warmup: float = 0.2  # onecycle: the fraction of the steps spent warming up
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    channels_last: bool = False
    precision: str = "float32"  # "bfloat16" (autocast of the forward pass) or "auto" (see resolve_precision)

    def __post_init__(self):
        if int(self.epochs) < 1:
            raise ValueError(f"Argument 'epochs' must be a positive integer, not {self.epochs!r}.")
        if int(self.batch_size) < 1:
            raise ValueError(f"Argument 'batch_size' must be a positive integer, not {self.batch_size!r}.")
        if not self.lr > 0:
            raise ValueError(f"Argument 'lr' must be positive, not {self.lr!r}.")
        for name, allowed in (("optimizer", ("adam", "sgd")), ("schedule", ("steps", "onecycle")),
                              ("precision", ("float32", "bfloat16", "auto"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Argument '{name}' must be one of {allowed}, not {getattr(self, name)!r}.")
        if not 0 < self.warmup < 1:
            raise ValueError(f"Argument 'warmup' must be in (0, 1), not {self.warmup!r}.")
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0 and 0 <= self.label_smoothing < 1):
            raise ValueError(f"Arguments 'momentum' and 'label_smoothing' must be in [0, 1) and 'weight_decay' "
                             f">= 0, not {self.momentum!r}, {self.label_smoothing!r} and {self.weight_decay!r}.")

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in _RECIPE_DEFAULTS and v == _RECIPE_DEFAULTS[k])}


#: The recipe options added after zoo keys were first written, at their defaults.
_RECIPE_DEFAULTS = {f: TrainConfig.__dataclass_fields__[f].default
                    for f in ("optimizer", "schedule", "warmup", "momentum", "weight_decay", "label_smoothing",
                              "channels_last", "precision")}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    (refused when that GPU does not exist)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device)
    if text not in ("cpu", "cuda") and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise ValueError(f"Argument 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}.")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"Argument 'device' is {text!r} but no CUDA device is available.")
        if ":" in text and int(text[5:]) >= torch.cuda.device_count():
            raise ValueError(f"Argument 'device' is {text!r} but only {torch.cuda.device_count()} CUDA "
                             f"device(s) exist.")
    return torch.device(text)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (else autocast emulates it, slowly)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:  # oneDNN's own test: AVX512 (BW, VL, DQ) or newer; AVX2 machines emulate bfloat16
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision a training run uses: ``"auto"`` is ``"bfloat16"`` where ``device``
    computes it natively and ``"float32"`` elsewhere; other values are kept."""
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16(torch.device(device)) else "float32"


def _warn_if_emulated(precision: str, device: torch.device) -> None:
    """Warn (once per process: the warnings module's default filter) about emulated bfloat16."""
    if precision == "bfloat16" and not native_bfloat16(device):
        import warnings

        warnings.warn(f"precision='bfloat16' on {device}, which has no native bfloat16: autocast emulates it "
                      f"(measured 10x slower than float32 on an AVX2 CPU); precision='auto' picks float32 here.",
                      RuntimeWarning, stacklevel=3)


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a reader
    (or an interrupted run) never sees a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ._locks import temp_path

    tmp = temp_path(path)  # host-tagged: a killed writer's orphan is swept at once (see _locks)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt leaves no orphaned temporary file
        tmp.unlink(missing_ok=True)
        raise


def restore_generator(gen: torch.Generator, state: torch.Tensor) -> None:
    """Set a CPU generator's state from a checkpoint. ``torch.load(map_location="cuda")``
    moves the saved state to the GPU too, and ``Generator.set_state`` accepts only a CPU
    ``ByteTensor``; so it goes back to the CPU first."""
    gen.set_state(state.detach().to("cpu", torch.uint8))


def _load_checkpoint(path, device):
    """The checkpoint at ``path``, or ``None`` when absent or unreadable (a truncated file:
    warned about, removed, and training restarts from scratch)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is damaged
        import warnings

        from ._data import CacheWarning

        warnings.warn(f"Training checkpoint {str(path)!r} is unreadable ({type(e).__name__}); "
                      f"restarting that training.", CacheWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, normalizer: Normalizer, batch_size: int = 500) -> float:
    """Accuracy (in [0, 1]) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size, normalizer):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if cfg.schedule == "onecycle":
        peak = max(1, round(cfg.warmup * total))
        t = step + 1
        return cfg.lr * (t / peak if t <= peak else max(0.0, (total - t + 1) / max(1, total - peak + 1)))
    drops = int(cfg.lr_drops * step / max(1, total)) if cfg.lr_drops > 0 else 0
    return cfg.lr * cfg.lr_factor ** min(drops, cfg.lr_drops)


def train_model(model: nn.Module, data: Dataset, cfg: TrainConfig, *, seed: int, device: torch.device,
                params=None, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                desc: str = "train") -> dict:
    """Train ``model`` in place and load its best checkpoint (held-out accuracy).

    ``params`` restricts the optimised parameters (fine-tuning). When ``checkpoint`` is given,
    the state after every epoch is written there atomically and an interrupted run resumes
    from it. Returns ``{"val_acc", "best_epoch", "epochs", "precision"}`` (the precision used,
    see :func:`resolve_precision`).
    """
    from tqdm.auto import tqdm

    fit_idx, val_idx = data.split_train(cfg.holdout, seed=0)
    if cfg.n_train is not None and cfg.n_train < len(fit_idx):
        fit_idx = np.sort(np.random.default_rng(seed).permutation(fit_idx)[:cfg.n_train])
    x_fit, y_fit = data.x_train[fit_idx], data.y_train[fit_idx]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    norm = Normalizer(data, device)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    precision = resolve_precision(cfg.precision, device)
    _warn_if_emulated(precision, device)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    steps_per_epoch = -(-len(y_fit) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(int(seed))
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": -1, "best_state": None}
    saved = _load_checkpoint(checkpoint, device) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        restore_generator(gen, saved["gen"])
        state = saved["state"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    aug = (data.shift, data.flips) if cfg.augment else None
    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        bar = tqdm(batches(x_fit, y_fit, cfg.batch_size, norm, shuffle=True, augment_with=aug, generator=gen),
                   total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for i, (xb, yb) in enumerate(bar):
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * steps_per_epoch + i, total, cfg)
            with torch.autocast(**autocast):
                loss = loss_fn(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = evaluate(model, x_val, y_val, norm)
        if acc > state["best_acc"]:
            state.update(best_acc=acc, best_epoch=epoch + 1,
                         best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        state["epoch"] = epoch + 1
        if checkpoint is not None and epoch + 1 < cfg.epochs:
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                         "state": state}, checkpoint)
    model.load_state_dict(state["best_state"])
    if cfg.channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return {"val_acc": state["best_acc"], "best_epoch": state["best_epoch"], "epochs": cfg.epochs,
            "precision": precision}


def clone_frozen(model: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()
