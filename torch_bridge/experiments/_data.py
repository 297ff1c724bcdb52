"""Datasets for the experiments: scikit-learn's 8x8 digits (embedded) and CIFAR-10 (user's copy).

Images are decoded once and cached as uint8 ``.npy`` arrays of shape (N, H, W, C) in a cache
directory (``$GROUPCALC_CACHE`` or ``~/.cache/groupcalc`` unless told otherwise). Batches are
made on the fly from the uint8 tensors: normalised with the training mean and standard
deviation, then augmented as in appendix D.1 of the paper (translations of up to ``shift``
pixels, padded with the mean colour, and left-right flips).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["Dataset", "load_dataset", "default_cache_dir", "CIFAR10_CLASSES", "batches", "augment",
           "DataError", "CacheWarning", "file_sha256"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class DataError(ValueError):
    """The dataset could not be found or read (a user-input problem, exit code 2)."""


class CacheWarning(UserWarning):
    """A cached file (decoded data, a zoo model) was truncated or corrupt and is rebuilt."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$GROUPCALC_CACHE`` if set, else ``~/.cache/groupcalc``."""
    env = os.environ.get("GROUPCALC_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/groupcalc").expanduser()


@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8, N x H x W x C) with labels and augmentation settings.

    ``mean`` and ``std`` (per channel, in [0, 1] units) are computed on the training images;
    the normalised mean colour is therefore 0, so padding a normalised batch with zeros pads
    it with the mean colour.
    """

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    num_classes: int
    shift: int
    flips: bool

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the images and labels actually used: the zoo and
        every job result are keyed by it, so other data never reuses their models."""
        h = hashlib.sha256(self.name.encode())
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()[:16]

    @property
    def mean(self) -> np.ndarray:
        return self.x_train.reshape(-1, self.in_channels).mean(0) / 255.0

    @property
    def std(self) -> np.ndarray:
        return self.x_train.reshape(-1, self.in_channels).std(0) / 255.0

    def subsample(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A class-stratified random subset (the first ``n`` of a fixed permutation)."""
        rng = np.random.default_rng(seed)

        def pick(y, n):
            if n is None or n >= len(y):
                return np.arange(len(y))
            idx = rng.permutation(len(y))[:n]
            return np.sort(idx)

        i, j = pick(self.y_train, n_train), pick(self.y_test, n_test)
        return Dataset(self.name, self.x_train[i], self.y_train[i], self.x_test[j], self.y_test[j],
                       self.num_classes, self.shift, self.flips)

    def split_train(self, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Indices of (fit, held-out) parts of the training set, for checkpoint selection."""
        if not 0 < holdout < 1:
            raise ValueError(f"Argument 'holdout' must lie in (0, 1), not {holdout!r}.")
        perm = np.random.default_rng(seed).permutation(len(self.y_train))
        k = max(1, int(round(holdout * len(perm))))
        return np.sort(perm[k:]), np.sort(perm[:k])


# --------------------------------------------------------------------------- loading
def load_dataset(name: str = "digits", data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load ``"digits"`` (embedded, no download) or ``"cifar10"`` (from ``data_dir``).

    ``data_dir`` for CIFAR-10 may be a ``cifar-10-batches-py`` folder (or a folder holding
    one), its ``.tar.gz``, an ImageFolder tree with ``train/`` and ``test/`` folders of class
    sub-folders, or a tarball of such a tree. Decoded arrays are cached in ``cache_dir``.
    """
    if name == "digits":
        return _digits()
    if name != "cifar10":
        raise DataError(f"Argument 'dataset' must be 'digits' or 'cifar10', not {name!r}.")
    if data_dir is None:
        raise DataError("Argument 'data_dir' is required for the cifar10 dataset (a cifar-10-batches-py "
                        "folder, its .tar.gz, an ImageFolder tree or a tarball of one).")
    source = Path(data_dir).expanduser()
    if not source.exists():
        raise DataError(f"Argument 'data_dir' must be an existing path, not {str(source)!r}.")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    arrays = _cached_cifar(source, cache)
    return Dataset("cifar10", *arrays, num_classes=10, shift=2, flips=True)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(20220101).permutation(len(y))
    n_test = 360
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    # Digits are not mirror-symmetric: translations by one pixel only, no flips.
    return Dataset("digits", x[tr], y[tr], x[te], y[te], num_classes=10, shift=1, flips=False)


def _source_key(source: Path) -> str:
    """Path, size and mtime of the source; for a folder, of every file under it too (an image
    replaced inside an ImageFolder tree changes no folder's own size or mtime above it)."""
    st = source.stat()
    text = f"{source.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file())
        text += "".join(f"|{p.relative_to(source)}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _cached_cifar(source: Path, cache: Path):
    folder = cache / "datasets" / f"cifar10-{_source_key(source)}"
    names = ("x_train", "y_train", "x_test", "y_test")
    files = [folder / f"{n}.npy" for n in names]
    sums_path = folder / "sha256.json"
    cached = _load_verified(files, sums_path)
    if cached is not None:
        return cached
    arrays = _read_cifar(source)
    folder.mkdir(parents=True, exist_ok=True)
    from ._locks import sweep_temporaries, temp_path

    sweep_temporaries(folder)  # partial arrays of a killed writer
    sums = {}
    for f, arr in zip(files, arrays):
        tmp = temp_path(f, ".npy")
        try:
            np.save(tmp, arr)
            sums[f.name] = file_sha256(tmp)
            os.replace(tmp, f)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    from ._locks import atomic_write_text

    atomic_write_text(sums_path, json.dumps(sums, indent=1))  # written last: marks the cache complete
    return arrays


def _load_verified(files, sums_path: Path):
    """The cached arrays if every file matches its recorded SHA-256, else ``None`` (with a
    :class:`CacheWarning` naming the bad file when a file is present but wrong)."""
    if not all(f.exists() for f in files):
        return None
    try:
        sums = json.loads(sums_path.read_text())
    except (OSError, ValueError):
        warnings.warn(f"Data cache {str(sums_path.parent)!r} has no valid checksum file; rebuilding it.",
                      CacheWarning, stacklevel=3)
        return None
    out = []
    for f in files:
        if sums.get(f.name) != file_sha256(f):
            warnings.warn(f"Data cache file {str(f)!r} is truncated or corrupt (checksum mismatch); rebuilding it.",
                          CacheWarning, stacklevel=3)
            return None
        out.append(np.load(f))
    return tuple(out)


def _read_cifar(source: Path):
    if source.is_dir():
        batches_dir = next((p for p in [source, source / "cifar-10-batches-py"] if (p / "data_batch_1").exists()), None)
        if batches_dir is not None:
            return _read_pickled({p.name: p.read_bytes for p in batches_dir.iterdir() if p.is_file()})
        return _read_image_folder_dir(source)
    if tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if any(Path(m.name).name == "data_batch_1" for m in members):
                files = {Path(m.name).name: (lambda m=m: tar.extractfile(m).read()) for m in members}
                return _read_pickled(files)
            entries = []
            for m in members:
                if m.name.lower().endswith(_IMAGE_SUFFIXES):
                    entries.append((m.name, lambda m=m: tar.extractfile(m).read()))
            return _read_image_entries(entries, str(source))
    raise DataError(f"Argument 'data_dir' ({str(source)!r}) is neither a folder nor a tar archive of CIFAR-10.")


def _read_pickled(files: dict):
    def load(name):
        if name not in files:
            raise DataError(f"CIFAR-10 batch file {name!r} is missing.")
        d = pickle.loads(files[name](), encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)

    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = load("test_batch")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xt, yt


def _read_image_folder_dir(root: Path):
    entries = [(str(p.relative_to(root)), p.read_bytes) for p in sorted(root.rglob("*"))
               if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES]
    return _read_image_entries(entries, str(root))


def _read_image_entries(entries, where: str):
    """Decode ImageFolder entries ``(path, read)``: ``.../{train,test}/<class>/<file>``."""
    from PIL import Image

    from tqdm.auto import tqdm

    split_data = {"train": ([], []), "test": ([], [])}
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    found = set()
    # disable=None: no bar when stderr is not a terminal (logs, tests, --no-progress runs)
    for path, read in tqdm(sorted(entries, key=lambda e: e[0]), desc="decoding CIFAR-10", leave=False,
                           disable=None):
        parts = Path(path).parts
        if len(parts) < 3 or parts[-3] not in split_data:
            continue
        cls = parts[-2]
        found.add(cls)
        if cls not in class_index:
            raise DataError(f"Unknown CIFAR-10 class folder {cls!r} in {where!r}; expected {CIFAR10_CLASSES}.")
        with Image.open(io.BytesIO(read())) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        xs, ys = split_data[parts[-3]]
        xs.append(arr)
        ys.append(class_index[cls])
    if not split_data["train"][0] or not split_data["test"][0]:
        raise DataError(f"No train/<class>/ and test/<class>/ images found in {where!r}.")
    out = []
    for s in ("train", "test"):
        xs, ys = split_data[s]
        out += [np.stack(xs), np.asarray(ys, dtype=np.int64)]
    return tuple(out)


# --------------------------------------------------------------------------- batches
class Normalizer:
    """uint8 NHWC batch -> normalised float NCHW tensor on a device."""

    def __init__(self, dataset: Dataset, device: torch.device):
        self.mean = torch.as_tensor(dataset.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(np.maximum(dataset.std, 1e-3), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.device = device

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = x_uint8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        # NHWC storage (channels_last) is what the uint8 arrays already are, and convolutions
        # run faster on it on CPU.
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, shift: int, flips: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels (zero padding = the mean colour after
    normalisation) and random left-right flips, per image, of a normalised NCHW batch."""
    n, c, h, w = x.shape
    dev = x.device
    if flips:
        flip = torch.rand(n, generator=generator).to(dev) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if shift > 0:
        xp = torch.nn.functional.pad(x, (shift, shift, shift, shift))
        oy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        bidx = torch.arange(n, device=dev)[:, None, None, None]
        cidx = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bidx, cidx, rows, cols]
    return x


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, normalizer: Normalizer, *, shuffle: bool = False,
            augment_with: tuple[int, bool] | None = None, generator: torch.Generator | None = None):
    """Yield ``(inputs, labels)`` batches (normalised, optionally shuffled and augmented)."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    n = len(yt)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb = normalizer(xt[idx])
        if augment_with is not None:
            xb = augment(xb, augment_with[0], augment_with[1], generator)
        yield xb, yt[idx].to(normalizer.device, non_blocking=True)
