"""MNIST loader: the four standard IDX files (gzip), downloaded on demand, validated strictly.

``load_mnist()`` returns ``(X_train, y_train, X_test, y_test)`` with ``X`` float32 in ``[0, 1]``
of shape ``(n, 784)`` and ``y`` int64 in ``0..9``. ``load_mnist(raw=True)`` gives ``X`` as the
files' uint8 pixels (0..255, a quarter of the bytes): ``X * np.float32(MNIST_SCALE)`` is the
float32 ``X`` bit for bit, and ``MinibatchLoop(...)(..., x_scale=MNIST_SCALE)`` trains on them,
scaling each batch as it gathers it.

Where the files are looked for, in order: the ``data_dir`` argument, the ``SRCGRAD_DATA``
environment variable, ``~/.cache/srcgrad/mnist``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import zlib
from pathlib import Path
from urllib.request import urlopen

import numpy as np

from srcgrad.errors import SrcgradError
from srcgrad.fileio import write_atomic

__all__ = ["DatasetError", "load_mnist", "resolve_data_dir", "MNIST_FILES", "MNIST_MIRRORS",
           "MNIST_SCALE"]

#: The factor from MNIST's uint8 pixels to ``load_mnist()``'s images in ``[0, 1]``: float32 images
#: are ``np.float32(pixel) * np.float32(MNIST_SCALE)`` (a product by the rounded reciprocal, not a
#: division by 255: the two differ in the last bit for some pixels).
MNIST_SCALE = 1.0 / 255.0


class DatasetError(SrcgradError):
    """A data set is missing, cannot be downloaded, or a file in it is corrupt."""


#: The four files, in the order (train images, train labels, test images, test labels).
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: Mirrors tried in turn when a file must be downloaded.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# MD5 of the .gz files of the original distribution (what the mirrors serve).
_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# MD5 of the uncompressed payloads: identical for any re-compressed copy of the real data.
_RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

_IMAGES_MAGIC = 2051  # 0x00000803: uint8 data, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: uint8 data, 1 dimension
_EXPECTED_COUNTS = {"train": 60000, "t10k": 10000}
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_DOWNLOAD_TIMEOUT_S = 30

_cache: dict = {}
_cache_lock = threading.Lock()


def resolve_data_dir(data_dir=None) -> Path:
    """The folder MNIST is read from: ``data_dir``, else ``$SRCGRAD_DATA``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("SRCGRAD_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "srcgrad" / "mnist"


# ----------------------------------------------------------------------------------------------
# Parsing and validation
# ----------------------------------------------------------------------------------------------


def _decompress(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file: {exc}") from exc
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: not a valid gzip file or truncated ({type(exc).__name__}: {exc}); "
            f"delete it and download it again"
        ) from exc


def _header(path: Path, raw: bytes, ndim: int) -> tuple:
    need = 4 * (1 + ndim)
    if len(raw) < need:
        raise DatasetError(
            f"{path}: file too short for an IDX header ({len(raw)} bytes, need {need}); "
            f"the file is truncated or corrupt"
        )
    fields = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    return tuple(int(v) for v in fields)


def _parse_images(path: Path, raw: bytes) -> np.ndarray:
    """Parse an IDX3 image file into a uint8 array of shape (n, rows*cols)."""
    if len(raw) >= 4:
        magic = int(np.frombuffer(raw, dtype=">u4", count=1)[0])
        if magic != _IMAGES_MAGIC:
            raise DatasetError(
                f"{path}: bad magic number {magic} (0x{magic:08x}); an IDX image file starts "
                f"with {_IMAGES_MAGIC} (0x{_IMAGES_MAGIC:08x}). Wrong or corrupt file."
            )
    magic, n, rows, cols = _header(path, raw, 3)
    if rows != 28 or cols != 28:
        raise DatasetError(f"{path}: images are {rows}x{cols}, MNIST images are 28x28")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: payload size mismatch: header says {n} images of {rows}x{cols} "
            f"({expected} bytes in all) but the file holds {len(raw)} bytes; "
            f"the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols)


def _parse_labels(path: Path, raw: bytes) -> np.ndarray:
    """Parse an IDX1 label file into a uint8 array of shape (n,)."""
    if len(raw) >= 4:
        magic = int(np.frombuffer(raw, dtype=">u4", count=1)[0])
        if magic != _LABELS_MAGIC:
            raise DatasetError(
                f"{path}: bad magic number {magic} (0x{magic:08x}); an IDX label file starts "
                f"with {_LABELS_MAGIC} (0x{_LABELS_MAGIC:08x}). Wrong or corrupt file."
            )
    magic, n = _header(path, raw, 1)
    expected = 8 + n
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: payload size mismatch: header says {n} labels ({expected} bytes in all) "
            f"but the file holds {len(raw)} bytes; the file is truncated or corrupt"
        )
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if n and int(labels.max()) > 9:
        bad = int(np.argmax(labels > 9))
        raise DatasetError(
            f"{path}: label {int(labels[bad])} at index {bad} is outside 0..9; corrupt file"
        )
    return labels


def _load_split(directory: Path, images_name: str, labels_name: str, split: str, check_counts):
    img_path = directory / images_name
    lab_path = directory / labels_name
    images = _parse_images(img_path, _decompress(img_path))
    labels = _parse_labels(lab_path, _decompress(lab_path))
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds "
            f"{labels.shape[0]} labels; the counts must match"
        )
    expected = _EXPECTED_COUNTS[split]
    if check_counts and images.shape[0] != expected:
        raise DatasetError(
            f"{img_path}: holds {images.shape[0]} images, the MNIST {split} set has {expected}"
        )
    return images, labels.astype(np.int64)


def _scaled(images):
    """``load_mnist()``'s float32 images from the uint8 pixels (see MNIST_SCALE)."""
    X = np.empty(images.shape, dtype=np.float32)
    np.multiply(images, np.float32(MNIST_SCALE), out=X, casting="unsafe")
    return X


# ----------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------


def _checksum_ok(name: str, blob: bytes) -> tuple:
    """(ok, why) for a downloaded .gz blob: either the original .gz MD5 or the payload MD5."""
    if hashlib.md5(blob).hexdigest() == _GZ_MD5[name]:
        return True, ""
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        return False, f"not a valid gzip file ({exc})"
    digest = hashlib.md5(raw).hexdigest()
    if digest == _RAW_MD5[name]:
        return True, ""
    return False, f"checksum mismatch (md5 of data {digest}, expected {_RAW_MD5[name]})"


def _fetch(url: str) -> bytes:
    with urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
        blob = resp.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(blob) > _MAX_DOWNLOAD_BYTES:
        raise OSError(f"response larger than {_MAX_DOWNLOAD_BYTES} bytes")
    return blob


def _write_atomic(path: Path, blob: bytes) -> None:
    write_atomic(path, lambda handle: handle.write(blob))


def _download(directory: Path, name: str, mirrors, log) -> None:
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        try:
            blob = _fetch(url)
        except Exception as exc:  # network errors come in many types (URLError, timeout, ...)
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        ok, why = _checksum_ok(name, blob)
        if not ok:
            errors.append(f"{url}: {why}")
            continue
        if log is not None:
            log(f"downloaded {url} ({len(blob)} bytes)")
        try:
            _write_atomic(directory / name, blob)
        except OSError as exc:
            raise DatasetError(f"cannot write {directory / name}: {exc}") from exc
        return
    raise DatasetError(
        f"could not download {name} from any mirror:\n  "
        + "\n  ".join(errors)
        + f"\nDownload it by hand and put it in {directory} (or point SRCGRAD_DATA at a folder "
        f"holding the four MNIST files: {', '.join(MNIST_FILES)})."
    )


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def _file_key(path: Path):
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def load_mnist(data_dir=None, download=True, *, mirrors=None, log=None, copy=True,
               check_counts=True, raw=False):
    """Load MNIST as ``(X_train, y_train, X_test, y_test)``.

    ``X_*`` are float32 arrays of shape ``(n, 784)`` scaled to ``[0, 1]``; ``y_*`` are int64 in
    ``0..9``. ``raw=True``: ``X_*`` are the files' uint8 pixels instead (``X * np.float32(
    MNIST_SCALE)`` is the float32 array bit for bit; for training, pass ``x_scale=MNIST_SCALE``
    to :class:`srcgrad.optim.MinibatchLoop`, which converts each batch as it gathers it).
    Missing files are downloaded when ``download`` is true (mirrors tried in turn, checksums
    verified, files written atomically). Every file is validated; a corrupt or truncated
    file raises :class:`DatasetError` naming it. Parsed arrays are cached in memory per file
    version, so repeated calls are cheap; ``copy=False`` returns the cached (read-only) arrays.
    ``check_counts=False`` accepts IDX files with other counts than 60,000/10,000 (small test sets).
    """
    directory = resolve_data_dir(data_dir)
    missing = [n for n in MNIST_FILES if not (directory / n).is_file()]
    if missing:
        if not download:
            raise DatasetError(
                f"MNIST files missing from {directory}: {', '.join(missing)}. Put the four "
                f"standard files ({', '.join(MNIST_FILES)}) there, set SRCGRAD_DATA to a folder "
                f"that holds them, or pass download=True."
            )
        for name in missing:
            _download(directory, name, MNIST_MIRRORS if mirrors is None else mirrors, log)

    key = tuple(_file_key(directory / n) for n in MNIST_FILES) + (bool(check_counts),)
    with _cache_lock:
        forms = _cache.get(key)
    if forms is None:
        X_tr, y_tr = _load_split(directory, MNIST_FILES[0], MNIST_FILES[1], "train", check_counts)
        X_te, y_te = _load_split(directory, MNIST_FILES[2], MNIST_FILES[3], "t10k", check_counts)
        forms = {"raw": (X_tr, y_tr, X_te, y_te)}
        with _cache_lock:
            _cache.clear()  # keep one data set, not one per file version
            _cache[key] = forms
    form = "raw" if raw else "float32"
    arrays = forms.get(form)
    if arrays is None:      # the float32 images, made once per data set from the pixels
        X_tr, y_tr, X_te, y_te = forms["raw"]
        arrays = (_scaled(X_tr), y_tr, _scaled(X_te), y_te)
    for a in arrays:
        a.flags.writeable = False
    with _cache_lock:
        forms[form] = arrays
    if copy:
        return tuple(a.copy() for a in arrays)
    return arrays
