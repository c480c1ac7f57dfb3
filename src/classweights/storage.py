"""Save and load class weights in a safe, human-readable JSON format.

A file looks like::

    {
      "format": "classweights",
      "format_version": 1,
      "num_classes": 3,
      "weights": [0.5, 1.0, 1.5],
      "metadata": {"method": "sqrt_inverse", "counts": [100, 25, 11]},
      "sha256": "..."
    }

``sha256`` is a checksum of the rest of the record (as compact JSON with sorted
keys), so a flipped bit or a partial copy is caught on load rather than
returned as plausible weights. A file edited by hand must drop the field.

Writes are atomic: the text goes to a temporary file in the same folder, is
flushed to disk, then renamed over the target, so a reader sees the old file
or the new one, never half of one. Loading never executes code: JSON is
parsed as data, and legacy ``.pth`` files (``{"class_weights": tensor}``) are
read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal, overload

import numpy as np
import torch

from ._errors import ClassWeightError
from .validation import validate_weights

FORMAT_NAME = "classweights"
FORMAT_VERSION = 1


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary handle whose content replaces ``path`` atomically when the block ends.

    The data goes to a temporary file in the same folder, is flushed to disk,
    gets the permissions ``open()`` would give (``0o666`` minus the umask), and
    is renamed over ``path``. If the block raises, the temporary file is
    removed and an existing ``path`` is left untouched.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_class_weights(weights: Any, path: str | os.PathLike[str], **metadata: Any) -> None:
    """Save ``weights`` (validated first) and JSON-able ``metadata`` to ``path`` atomically.

    Tensors and numpy arrays in ``metadata`` are stored as lists.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.json")
        >>> save_class_weights([0.5, 1.5], path, method="sqrt_inverse", counts=[9, 1])
        >>> load_class_weights(path)
        tensor([0.5000, 1.5000])
    """
    values = validate_weights(weights, _length(weights)).detach().cpu()
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_classes": int(values.numel()),
        "weights": [float(v) for v in values.tolist()],
        "metadata": {str(k): _jsonable(v, str(k)) for k, v in metadata.items()},
    }
    record["sha256"] = _checksum(record)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise ClassWeightError(f"could not write class weights to {str(path)!r}: {exc.strerror or exc}") from None


@overload
def load_class_weights(path: str | os.PathLike[str], *, num_classes: int | None = ..., with_metadata: Literal[False] = ...) -> torch.Tensor: ...
@overload
def load_class_weights(path: str | os.PathLike[str], *, num_classes: int | None = ..., with_metadata: Literal[True]) -> tuple[torch.Tensor, dict[str, Any]]: ...


def load_class_weights(
    path: str | os.PathLike[str], *, num_classes: int | None = None, with_metadata: bool = False
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Load weights saved by :func:`save_class_weights`, or a legacy ``.pth`` file.

    Args:
        path: a JSON file from :func:`save_class_weights`, or a ``.pth`` file
            holding ``{"class_weights": tensor}`` or a bare tensor.
        num_classes: if given, the weights must have this many entries.
        with_metadata: also return the metadata dict (empty for ``.pth`` files).

    Returns:
        float32 tensor ``[C]``, validated; or ``(weights, metadata)``.

    Raises:
        ClassWeightError: missing, unreadable, corrupt or invalid files, and
            ``.pth`` files that would need to run code to load.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ClassWeightError(f"Expected a class-weights file, but {str(file)!r} does not exist") from None
    except OSError as exc:
        raise ClassWeightError(f"could not read {str(file)!r}: {exc.strerror or exc}") from None
    if raw[:2] == b"PK" or raw[:1] == b"\x80":  # torch zip archive or raw pickle
        weights, metadata = _load_legacy(file), {}
    else:
        weights, metadata = _parse_json(raw, file)
    try:
        checked = validate_weights(weights, num_classes if num_classes is not None else _length(weights))
    except ClassWeightError as exc:
        raise ClassWeightError(f"{str(file)!r}: {exc}") from None
    return (checked, metadata) if with_metadata else checked


def _parse_json(raw: bytes, file: Path) -> tuple[Any, dict[str, Any]]:
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ClassWeightError(f"{str(file)!r} is not a valid class-weights file (JSON expected: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise ClassWeightError(f"{str(file)!r} is not a class-weights file (expected \"format\": \"{FORMAT_NAME}\")")
    if "sha256" in record and record.pop("sha256") != _checksum(record):
        raise ClassWeightError(
            f"{str(file)!r} is corrupt: its sha256 does not match its content "
            "(a damaged copy; if you edited it by hand, delete the \"sha256\" line)"
        )
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise ClassWeightError(f"{str(file)!r} has format_version {version!r}; this version of classweights reads {FORMAT_VERSION}")
    weights = record.get("weights")
    if not isinstance(weights, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise ClassWeightError(f"{str(file)!r}: expected \"weights\" to be a list of numbers")
    if record.get("num_classes") != len(weights):
        raise ClassWeightError(f"{str(file)!r}: \"num_classes\" is {record.get('num_classes')!r} but there are {len(weights)} weights")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ClassWeightError(f"{str(file)!r}: expected \"metadata\" to be an object")
    return torch.tensor(weights, dtype=torch.float64), metadata


def _checksum(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _load_legacy(file: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickles; a failure is reported below
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on corrupt input; none of them may escape raw
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClassWeightError(f"could not load {str(file)!r} safely as a torch file (weights_only=True): {first}") from None
    if isinstance(data, Mapping) and "class_weights" in data:
        data = data["class_weights"]
    if not isinstance(data, torch.Tensor):
        raise ClassWeightError(f"{str(file)!r}: expected a tensor or {{'class_weights': tensor}}, but got {type(data).__name__}")
    return data


def _length(weights: Any) -> int:
    try:
        shape = np.shape(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights)
    except ValueError:  # ragged nested lists
        shape = ()
    if len(shape) != 1:
        raise ClassWeightError(f"Expected `weights` to be a 1-D sequence, but got shape {list(shape)}")
    return int(shape[0])


def _jsonable(value: Any, key: str) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), key)
    if isinstance(value, np.generic):
        return _jsonable(value.item(), key)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ClassWeightError(f"Expected metadata {key!r} to be finite, but got {value}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    raise ClassWeightError(f"Expected metadata {key!r} to be JSON-serialisable, but got {type(value).__name__}")
