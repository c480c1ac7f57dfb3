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
returned as plausible weights. A file edited by hand must drop the field;
``load_class_weights(..., require_checksum=True)`` refuses such files (for
caches, which nobody edits).

Reading is bounded: only a regular file of at most
:data:`MAX_WEIGHTS_FILE_BYTES` is read (never a FIFO or a device, which could
block or never end), and the JSON is checked field by field, so no content
makes the loader raise anything but :class:`~classweights.ClassWeightError`.

Writes are atomic: the text goes to a temporary file in the same folder, is
flushed to disk, then renamed over the target, so a reader sees the old file
or the new one, never half of one. Loading never executes code: JSON is
parsed as data, and legacy ``.pth`` files (``{"class_weights": tensor}``) are
read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
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

from ._checks import (
    MAX_CLASSES,
    check_flag,
    check_num_classes,
    check_positive_int,
    is_int,
)
from ._errors import ClassWeightError
from ._files import open_regular
from .validation import validate_weights

FORMAT_NAME = "classweights"
FORMAT_VERSION = 1
MAX_WEIGHTS_FILE_BYTES = 64 << 20
"""The largest weights file :func:`load_class_weights` reads, and :func:`save_class_weights` writes (64 MiB).

A file of :data:`~classweights.MAX_CLASSES` weights with their counts as
metadata takes about 50 MB.
"""

_FIELDS = {"format", "format_version", "num_classes", "weights", "metadata", "sha256"}
_MAX_NUMBER_CHARS = 64  # digits of a JSON integer; longer ones are refused before Python converts them


def read_small_file(path: str | os.PathLike[str], *, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of ``path``, if it is a regular file of at most ``max_bytes`` bytes; else a ClassWeightError.

    A FIFO, a device (``/dev/zero``), a socket or a directory is refused at
    once, before anything is read: the path is opened without blocking and the
    open file is checked, so what was checked is what is read. At most
    ``max_bytes + 1`` bytes are read, so a file that grows meanwhile is refused
    too. With ``follow_symlinks=False`` a symbolic link is refused as well.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("hello")
        >>> read_small_file(path, max_bytes=16)
        b'hello'
        >>> read_small_file(path, max_bytes=4)
        Traceback (most recent call last):
        ...
        classweights.ClassWeightError: Expected '...note.txt' to be at most 4 bytes, but it is 5 bytes
    """
    max_bytes = check_positive_int(max_bytes, "max_bytes")
    follow_symlinks = check_flag(follow_symlinks, "follow_symlinks")
    return _read_small(path, max_bytes, follow_symlinks, what="a regular file", existing="an existing file")


def _read_small(
    path: str | os.PathLike[str], max_bytes: int, follow_symlinks: bool, *, what: str, existing: str
) -> bytes:
    fd, info = open_regular(path, what=what, existing=existing, follow_symlinks=follow_symlinks)
    try:
        shown = repr(os.fspath(path))
        if info.st_size > max_bytes:
            raise ClassWeightError(f"Expected {shown} to be at most {max_bytes} bytes, but it is {info.st_size} bytes")
        parts: list[bytes] = []
        left = max_bytes + 1  # one byte more than allowed tells a file that grew while it was read
        while left > 0:
            part = os.read(fd, min(left, 1 << 20))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except OSError as exc:
        raise ClassWeightError(f"could not read {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if left <= 0:
        raise ClassWeightError(
            f"Expected {shown} to be at most {max_bytes} bytes, but it grew past that while it was read"
        )
    return b"".join(parts)


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
    data = (json.dumps(record, indent=2, allow_nan=False) + "\n").encode("utf-8")
    if len(data) > MAX_WEIGHTS_FILE_BYTES:  # never write a file that load_class_weights would refuse
        raise ClassWeightError(
            f"Expected the weights file to be at most MAX_WEIGHTS_FILE_BYTES={MAX_WEIGHTS_FILE_BYTES} bytes, but it would be {len(data)} (too much metadata?)"
        )
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ClassWeightError(f"could not write class weights to {str(path)!r}: {exc.strerror or exc}") from None


@overload
def load_class_weights(path: str | os.PathLike[str], *, num_classes: int | None = ..., with_metadata: Literal[False] = ...,
                       require_checksum: bool = ..., follow_symlinks: bool = ...) -> torch.Tensor: ...  # fmt: skip
@overload
def load_class_weights(path: str | os.PathLike[str], *, num_classes: int | None = ..., with_metadata: Literal[True],
                       require_checksum: bool = ..., follow_symlinks: bool = ...) -> tuple[torch.Tensor, dict[str, Any]]: ...  # fmt: skip


def load_class_weights(
    path: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    with_metadata: bool = False,
    require_checksum: bool = False,
    follow_symlinks: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    """Load weights saved by :func:`save_class_weights`, or a legacy ``.pth`` file.

    Args:
        path: a JSON file from :func:`save_class_weights`, or a ``.pth`` file
            holding ``{"class_weights": tensor}`` or a bare tensor. It must be
            a regular file of at most :data:`MAX_WEIGHTS_FILE_BYTES` bytes.
        num_classes: if given, the weights must have this many entries.
        with_metadata: also return the metadata dict (empty for ``.pth`` files).
        require_checksum: refuse a file without a valid ``"sha256"`` (and any
            ``.pth`` file): use it for files only programs write, such as
            caches. By default a file without one is accepted, since a file
            edited by hand must drop it; a wrong one is refused either way.
        follow_symlinks: with False, a symbolic link is refused instead of
            followed (for files in a folder others may write, such as caches).

    Returns:
        float32 tensor ``[C]``, validated; or ``(weights, metadata)``.

    Raises:
        ClassWeightError: missing, unreadable, oversized, corrupt or invalid
            files, paths that are not regular files, and ``.pth`` files that
            would need to run code to load.
    """
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    with_metadata = check_flag(with_metadata, "with_metadata")
    require_checksum = check_flag(require_checksum, "require_checksum")
    follow_symlinks = check_flag(follow_symlinks, "follow_symlinks")
    file = Path(path)
    raw = _read_small(
        file, MAX_WEIGHTS_FILE_BYTES, follow_symlinks, what="a class-weights file", existing="a class-weights file"
    )
    if raw[:2] == b"PK" or raw[:1] == b"\x80":  # torch zip archive or raw pickle
        if require_checksum:
            raise ClassWeightError(
                f'{str(file)!r} is a torch file, which has no checksum; expected a JSON weights file with "sha256"'
            )
        weights, metadata = _load_legacy(raw, file), {}
    else:
        weights, metadata = _parse_json(raw, file, require_checksum)
    try:
        checked = validate_weights(weights, num_classes if num_classes is not None else _length(weights))
    except ClassWeightError as exc:
        raise ClassWeightError(f"{str(file)!r}: {exc}") from None
    return (checked, metadata) if with_metadata else checked


def _parse_json(raw: bytes, file: Path, require_checksum: bool = False) -> tuple[Any, dict[str, Any]]:
    name = repr(str(file))
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_int=_parse_int,
                            parse_float=_parse_float, object_pairs_hook=_unique_keys)  # fmt: skip
    except RecursionError:
        raise ClassWeightError(f"{name} is not a valid class-weights file (JSON expected: nested too deeply)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ClassWeightError(f"{name} is not a valid class-weights file (JSON expected: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise ClassWeightError(f'{name} is not a class-weights file (expected "format": "{FORMAT_NAME}")')
    unknown = sorted(set(record) - _FIELDS)
    if unknown:  # e.g. a damaged "sha256" key, which would otherwise pass as a file without a checksum
        raise ClassWeightError(
            f"{name} has the unknown field {unknown[0]!r}; expected only {', '.join(sorted(_FIELDS))}"
        )
    if "sha256" in record:
        stored = record.pop("sha256")
        try:
            expected = _checksum(record)
        except (RecursionError, ValueError, TypeError):
            expected = None
        if stored != expected:
            raise ClassWeightError(
                f"{name} is corrupt: its sha256 does not match its content "
                '(a damaged copy; if you edited it by hand, delete the "sha256" line)'
            )
    elif require_checksum:
        raise ClassWeightError(f'{name} has no "sha256" checksum; expected one (require_checksum=True)')
    version = record.get("format_version")
    if not is_int(version) or version != FORMAT_VERSION:
        raise ClassWeightError(
            f"{name} has format_version {_short(version)}; this version of classweights reads {FORMAT_VERSION}"
        )
    weights = record.get("weights")
    if not isinstance(weights, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
    ):
        raise ClassWeightError(f'{name}: expected "weights" to be a list of numbers')
    count = record.get("num_classes")
    if not is_int(count) or count != len(weights):
        raise ClassWeightError(f'{name}: "num_classes" is {_short(count)} but there are {len(weights)} weights')
    if len(weights) > MAX_CLASSES:
        raise ClassWeightError(
            f"{name}: expected at most MAX_CLASSES={MAX_CLASSES} weights, but there are {len(weights)}"
        )
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ClassWeightError(f'{name}: expected "metadata" to be an object, but got {_short(metadata)}')
    counts = metadata.get("counts")
    if counts is not None and not (isinstance(counts, list) and len(counts) == len(weights)
                                   and all(is_int(c) and c >= 0 for c in counts)):  # fmt: skip
        raise ClassWeightError(
            f'{name}: expected metadata "counts" to be {len(weights)} integers >= 0, but got {_short(counts)}'
        )
    return torch.tensor(weights, dtype=torch.float64), metadata


def _checksum(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:  # long digit strings cost quadratic time to convert
        raise ValueError(f"the integer {text[:12]}... has {len(text)} digits (at most {_MAX_NUMBER_CHARS} allowed)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"the number {text[:32]} is too large for a float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:  # which of two values counts would be a guess
            raise ValueError(f"duplicate key {key!r}")
        record[key] = value
    return record


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_legacy(raw: bytes, file: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickles; a failure is reported below
            # from the bytes already read and checked, not the path, which may have changed since
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on corrupt input; none may escape raw
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClassWeightError(
            f"could not load {str(file)!r} safely as a torch file (weights_only=True): {first}"
        ) from None
    if isinstance(data, Mapping) and "class_weights" in data:
        data = data["class_weights"]
    if not isinstance(data, torch.Tensor):
        raise ClassWeightError(
            f"{str(file)!r}: expected a tensor or {{'class_weights': tensor}}, but got {type(data).__name__}"
        )
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
