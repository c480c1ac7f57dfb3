"""Checks of the options every public function takes, shared so that each is checked the same way everywhere."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ._errors import ClassWeightError

MAX_CLASSES = 1 << 20
"""The largest ``num_classes`` any function accepts (1,048,576).

Counts, weights and their files grow with the number of classes, so a mistyped
``num_classes`` (say ``10**15``) is refused at once instead of allocating
memory for it. A weights file of this many classes fits in
:data:`classweights.storage.MAX_WEIGHTS_FILE_BYTES`.
"""


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short: a 400-digit number must not fill the error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_names(names: Iterable[Any], limit: int = 12) -> str:
    """Keys, columns or file members for an error message: each as :func:`shown` gives it (quoted, so a name with a
    newline or a comma stays one item on one line), at most ``limit`` of them, ``(none)`` for none."""
    names = list(names)
    listed = ", ".join(shown(name) for name in names[:limit])
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return listed + more if names else "(none)"


def check_key_and_progress(key: Any, progress: Any) -> None:
    """The ``key=`` and ``progress=`` options every counting function takes: a string, an integer or None; a
    callable or None."""
    if key is not None and not isinstance(key, str) and not is_int(key):
        raise ClassWeightError(f"Expected `key` to be a string, an integer or None, but got {shown(key)}")
    if progress is not None and not callable(progress):
        raise ClassWeightError(f"Expected `progress` to be a callable or None, but got {shown(progress)}")


def is_int(value: Any) -> bool:
    """True for Python and numpy integers; False for bools, which are not labels or sizes."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_num_classes(num_classes: Any, name: str = "num_classes") -> int:
    if not is_int(num_classes) or num_classes < 1:
        raise ClassWeightError(f"Expected `{name}` to be a positive integer, but got {shown(num_classes)}")
    if num_classes > MAX_CLASSES:
        raise ClassWeightError(
            f"Expected `{name}` to be at most MAX_CLASSES={MAX_CLASSES}, but got {shown(num_classes)}"
        )
    return int(num_classes)


def check_ignore_index(ignore_index: Any) -> int | None:
    if ignore_index is None:
        return None
    if not is_int(ignore_index):
        raise ClassWeightError(f"Expected `ignore_index` to be an integer or None, but got {shown(ignore_index)}")
    return int(ignore_index)


def check_positive_int(value: Any, name: str, *, maximum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        raise ClassWeightError(
            f"Expected `{name}` to be a positive integer{' or None' if allow_none else ''}, but got {shown(value)}"
        )
    if maximum is not None and value > maximum:
        raise ClassWeightError(f"Expected `{name}` to be at most {maximum}, but got {shown(value)}")
    return int(value)


def as_float(value: Any) -> float | None:
    """``value`` as a float; None for bools, non-numbers and numbers past float64's range (e.g. ``10**400``)."""
    if not is_real(value):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return None


def check_real(value: Any, name: str, expected: str) -> float:
    number = as_float(value)
    if number is None:
        raise ClassWeightError(f"Expected `{name}` to be {expected}, but got {shown(value)}")
    return number


def check_finite(value: Any, name: str, expected: str) -> float:
    number = check_real(value, name, expected)
    if not math.isfinite(number):
        raise ClassWeightError(f"Expected `{name}` to be {expected}, but got {shown(value)}")
    return number


def check_flag(value: Any, name: str) -> bool:
    # A string such as "false" is truthy: taking it as True would do the opposite of what was asked.
    if not isinstance(value, (bool, np.bool_)):
        raise ClassWeightError(f"Expected `{name}` to be True or False, but got {shown(value)}")
    return bool(value)


def check_dense_tensor(tensor: torch.Tensor, where: str) -> None:
    """Refuse tensors whose values cannot be read as plain numbers."""
    if tensor.is_meta:
        raise ClassWeightError(f"{where}: expected a tensor with data, but got a meta tensor (it holds no values)")
    if getattr(tensor, "is_nested", False):
        raise ClassWeightError(f"{where}: expected a dense tensor, but got a nested tensor; pad it or pass its parts")
    if tensor.layout != torch.strided:
        layout = str(tensor.layout).replace("torch.", "")
        raise ClassWeightError(f"{where}: expected a dense tensor, but got layout {layout}; call .to_dense() first")
    if tensor.is_quantized:
        raise ClassWeightError(
            f"{where}: expected integer labels, but got a quantized tensor of dtype {str(tensor.dtype).replace('torch.', '')}"
        )
    if tensor.is_complex():
        raise ClassWeightError(
            f"{where}: expected integer labels, but got dtype {str(tensor.dtype).replace('torch.', '')}"
        )


def sequence_as_float64(values: Any, name: str, *, kinds: str, expected: str) -> torch.Tensor:
    """An array or sequence of numbers as a float64 tensor; numpy dtype kinds outside ``kinds`` are refused.

    ``expected`` completes "Expected `name` to be ..." for a refused dtype.
    """
    if isinstance(values, np.ma.MaskedArray):
        raise ClassWeightError(f"Expected `{name}` to be a plain sequence of numbers, but got a masked array")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ClassWeightError(
            f"Expected `{name}` to be a sequence of numbers, but got {type(values).__name__} ({exc})"
        ) from None
    if array.dtype.kind not in kinds:  # object (ragged lists, huge ints), strings, complex, dates
        raise ClassWeightError(f"Expected `{name}` to be {expected}, but got dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.float64))
