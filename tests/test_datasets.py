"""Tests for srcgrad.datasets (MNIST loader)."""

import functools
import gzip
import io
import os
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from mission import needs
from srcgrad import datasets
from srcgrad.datasets import MNIST_FILES, DatasetError, load_mnist
from srcgrad.errors import SrcgradError


def _real_mnist_dir():
    env = os.environ.get("SRCGRAD_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


REAL = _real_mnist_dir()
needs_real = needs(all((REAL / n).is_file() for n in MNIST_FILES),
                   f"real MNIST not found in {REAL} (set SRCGRAD_DATA)")


# ------------------------------------------------------------------------------------------------
# fake IDX files
# ------------------------------------------------------------------------------------------------


def idx_images(n, rows=28, cols=28, magic=2051, payload=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=n * rows * cols, dtype=np.uint8).tobytes()
    if payload is not None:
        data = payload
    return struct.pack(">IIII", magic, n, rows, cols) + data


def idx_labels(n, magic=2049, payload=None, seed=1):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 10, size=n, dtype=np.uint8).tobytes()
    if payload is not None:
        data = payload
    return struct.pack(">II", magic, n) + data


def write_fake(d, n_train=7, n_test=3, **override):
    d.mkdir(parents=True, exist_ok=True)
    raw = {
        MNIST_FILES[0]: idx_images(n_train, seed=2),
        MNIST_FILES[1]: idx_labels(n_train, seed=3),
        MNIST_FILES[2]: idx_images(n_test, seed=4),
        MNIST_FILES[3]: idx_labels(n_test, seed=5),
    }
    raw.update(override)
    for name, blob in raw.items():
        (d / name).write_bytes(gzip.compress(blob))
    return raw


# ------------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------------


@needs_real
def test_real_mnist_shapes_dtypes_ranges():
    X_tr, y_tr, X_te, y_te = load_mnist(REAL, download=False)
    assert X_tr.shape == (60000, 784) and X_te.shape == (10000, 784)
    assert y_tr.shape == (60000,) and y_te.shape == (10000,)
    assert X_tr.dtype == np.float32 and X_te.dtype == np.float32
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64
    assert X_tr.min() == 0.0 and X_tr.max() == 1.0
    assert set(np.unique(y_tr)) == set(range(10))
    assert set(np.unique(y_te)) == set(range(10))
    # well-known facts of MNIST: first training label is 5, first test label is 7
    assert y_tr[0] == 5 and y_te[0] == 7
    assert np.bincount(y_tr).tolist()[1] == 6742
    assert X_tr.flags.c_contiguous and X_tr.flags.writeable


@needs_real
def test_real_mnist_env_var_and_cache(monkeypatch):
    monkeypatch.setenv("SRCGRAD_DATA", str(REAL))
    a = load_mnist(download=False, copy=False)
    b = load_mnist(download=False, copy=False)
    assert a[0] is b[0]  # cached
    assert not a[0].flags.writeable


def test_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SRCGRAD_DATA", raising=False)
    assert datasets.resolve_data_dir() == Path.home() / ".cache" / "srcgrad" / "mnist"
    monkeypatch.setenv("SRCGRAD_DATA", str(tmp_path))
    assert datasets.resolve_data_dir() == tmp_path
    assert datasets.resolve_data_dir(tmp_path / "x") == tmp_path / "x"


# ------------------------------------------------------------------------------------------------
# fake data: valid and corrupt
# ------------------------------------------------------------------------------------------------


def test_fake_valid(tmp_path):
    raw = write_fake(tmp_path)
    X_tr, y_tr, X_te, y_te = load_mnist(tmp_path, download=False, check_counts=False)
    assert X_tr.shape == (7, 784) and X_te.shape == (3, 784)
    expect = np.frombuffer(raw[MNIST_FILES[0]], np.uint8, offset=16).reshape(7, 784) / 255.0
    np.testing.assert_allclose(X_tr, expect, rtol=1e-6)
    np.testing.assert_array_equal(y_te, np.frombuffer(raw[MNIST_FILES[3]], np.uint8, offset=8))


def test_standard_counts_enforced_by_default(tmp_path):
    write_fake(tmp_path)
    with pytest.raises(DatasetError, match="60000"):
        load_mnist(tmp_path, download=False)


def test_corrupt_image_magic(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[0]: idx_images(7, magic=2049)})
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz.*magic"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_corrupt_label_magic(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[3]: idx_labels(3, magic=1234)})
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz.*magic"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_truncated_gzip(tmp_path):
    write_fake(tmp_path)
    p = tmp_path / MNIST_FILES[0]
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz.*(gzip|truncated)"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_not_gzip(tmp_path):
    write_fake(tmp_path)
    (tmp_path / MNIST_FILES[1]).write_bytes(b"<html>not found</html>")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz.*gzip"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_wrong_count_in_header(tmp_path):
    # header says 9 images, payload holds 7
    payload = np.zeros(7 * 784, np.uint8).tobytes()
    write_fake(tmp_path, **{MNIST_FILES[0]: idx_images(9, payload=payload)})
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz.*9 images.*truncated"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_truncated_payload_labels(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[1]: idx_labels(7)[:-2]})
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz.*size mismatch"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_short_header(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[2]: struct.pack(">II", 2051, 3)})
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz.*too short"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_wrong_dimensions(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[2]: idx_images(3, rows=20, cols=20)})
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz.*20x20"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_image_label_count_mismatch(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[1]: idx_labels(6)})
    with pytest.raises(DatasetError, match=r"7 images.*6 labels"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_label_out_of_range(tmp_path):
    write_fake(tmp_path, **{MNIST_FILES[3]: idx_labels(3, payload=bytes([1, 12, 3]))})
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz.*label 12"):
        load_mnist(tmp_path, download=False, check_counts=False)


def test_missing_files_no_download(tmp_path):
    write_fake(tmp_path)
    (tmp_path / MNIST_FILES[2]).unlink()
    with pytest.raises(DatasetError) as ei:
        load_mnist(tmp_path, download=False)
    msg = str(ei.value)
    assert MNIST_FILES[2] in msg and str(tmp_path) in msg and "SRCGRAD_DATA" in msg
    assert MNIST_FILES[0] not in msg.split("Put")[0]
    assert isinstance(ei.value, SrcgradError)


# ------------------------------------------------------------------------------------------------
# downloading (urlopen monkeypatched; no network)
# ------------------------------------------------------------------------------------------------


class _Resp(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


@functools.lru_cache(maxsize=None)
def _fake_payloads():
    """Fake files whose checksums are registered as the 'real' ones for the test."""
    blobs = {
        MNIST_FILES[0]: gzip.compress(idx_images(60000, payload=bytes(60000 * 784))),
        MNIST_FILES[1]: gzip.compress(idx_labels(60000, payload=bytes(60000))),
        MNIST_FILES[2]: gzip.compress(idx_images(10000, payload=bytes(10000 * 784))),
        MNIST_FILES[3]: gzip.compress(idx_labels(10000, payload=bytes(10000))),
    }
    import hashlib

    raw_md5 = {n: hashlib.md5(gzip.decompress(b)).hexdigest() for n, b in blobs.items()}
    return blobs, raw_md5


def test_download_falls_back_to_second_mirror(tmp_path, monkeypatch):
    blobs, raw_md5 = _fake_payloads()
    monkeypatch.setattr(datasets, "_RAW_MD5", dict(raw_md5))
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        if url.startswith("https://mirror-a/"):
            return _Resp(gzip.compress(b"tampered" * 10))  # bad checksum
        if url.startswith("https://mirror-b/"):
            return _Resp(blobs[name])
        raise AssertionError(url)

    monkeypatch.setattr(datasets, "urlopen", fake_urlopen)
    logs = []
    X_tr, y_tr, X_te, y_te = load_mnist(
        tmp_path / "dl", mirrors=("https://mirror-a/", "https://mirror-b/"), log=logs.append
    )
    assert X_tr.shape == (60000, 784) and y_te.shape == (10000,)
    assert len(calls) == 8 and calls[0].startswith("https://mirror-a/")
    assert calls[1].startswith("https://mirror-b/")
    for n in MNIST_FILES:
        assert (tmp_path / "dl" / n).read_bytes() == blobs[n]
    assert not list((tmp_path / "dl").glob("*.part"))  # no temp files left
    assert len(logs) == 4


def test_download_default_mirrors_tried_in_order(tmp_path, monkeypatch):
    blobs, raw_md5 = _fake_payloads()
    monkeypatch.setattr(datasets, "_RAW_MD5", dict(raw_md5))
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        if "ossci" in url:
            raise URLError("connection refused")
        return _Resp(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(datasets, "urlopen", fake_urlopen)
    load_mnist(tmp_path)
    assert "ossci-datasets" in calls[0] and "cvdf-datasets" in calls[1]


def test_download_all_mirrors_fail(tmp_path, monkeypatch):
    def fake_urlopen(url, timeout=None):
        if "mirror-a" in url:
            raise URLError("no route to host")
        return _Resp(b"garbage")

    monkeypatch.setattr(datasets, "urlopen", fake_urlopen)
    with pytest.raises(DatasetError) as ei:
        load_mnist(tmp_path, mirrors=("https://mirror-a/", "https://mirror-b/"))
    msg = str(ei.value)
    assert "could not download" in msg and MNIST_FILES[0] in msg
    assert "mirror-a" in msg and "mirror-b" in msg and "no route to host" in msg
    assert str(tmp_path) in msg
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_only_missing_files_downloaded(tmp_path, monkeypatch):
    blobs, raw_md5 = _fake_payloads()
    monkeypatch.setattr(datasets, "_RAW_MD5", dict(raw_md5))
    for n in MNIST_FILES[:3]:
        (tmp_path / n).write_bytes(blobs[n])
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return _Resp(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(datasets, "urlopen", fake_urlopen)
    load_mnist(tmp_path, mirrors=("https://m/",))
    assert calls == ["https://m/" + MNIST_FILES[3]]


def test_known_gz_md5_accepted():
    ok, _ = datasets._checksum_ok(MNIST_FILES[1], b"definitely not it")
    assert not ok


def test_raw_pixels_and_the_scale_give_the_float_images(tmp_path):
    """load_mnist(raw=True): the files' uint8 pixels; times np.float32(MNIST_SCALE) they are the
    float32 images bit for bit (every pixel value 0..255 appears); both forms are cached."""
    pixels = np.arange(7 * 784, dtype=np.int64) % 256
    payload = pixels.astype(np.uint8).tobytes()
    write_fake(tmp_path, **{MNIST_FILES[0]: idx_images(7, payload=payload)})
    X_raw, y_raw, Xt_raw, yt_raw = load_mnist(tmp_path, download=False, check_counts=False,
                                              raw=True)
    X, y, X_te, y_te = load_mnist(tmp_path, download=False, check_counts=False)
    assert X_raw.dtype == np.uint8 and X_raw.shape == (7, 784) and Xt_raw.shape == (3, 784)
    np.testing.assert_array_equal(X_raw.reshape(-1), pixels)
    scale = np.float32(datasets.MNIST_SCALE)
    assert (X_raw * scale).dtype == np.float32
    assert np.array_equal(X_raw * scale, X) and np.array_equal(Xt_raw * scale, X_te)
    assert np.array_equal(y_raw, y) and np.array_equal(yt_raw, y_te)
    # within half an ulp of pixel / 255 plus the reciprocal's rounding: what the scale means
    np.testing.assert_allclose(X, X_raw / 255.0, rtol=2 ** -22, atol=0)
    assert X_raw.flags.writeable                      # copies by default
    cached = load_mnist(tmp_path, download=False, check_counts=False, raw=True, copy=False)
    assert not cached[0].flags.writeable
    assert load_mnist(tmp_path, download=False, check_counts=False, raw=True,
                      copy=False)[0] is cached[0]
