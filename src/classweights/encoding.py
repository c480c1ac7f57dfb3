"""Labels of any kind -> class indices, and scikit-learn's ``class_weight=`` from them.

The rest of the library counts integer labels ``0..C-1``. Real labels are
often strings (``"cat"``), negative or sparse integers (``-1, 1``, ``3, 70``)
or other hashable values. :func:`encode_labels` maps them to ``0..C-1`` the
way scikit-learn's ``LabelEncoder`` does (classes sorted as ``np.unique``
sorts them), and :func:`class_weight_dict` turns them into the
``{label: weight}`` dict that scikit-learn estimators take as ``class_weight=``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._checks import check_dense_tensor, shown
from ._errors import ClassWeightError
from .counting import count_label_stats
from .methods import needs_image_pixels, weights_from_counts

_SHOWN_VALUES = 5  # labels named in an error before "..."


def encode_labels(y: Any, classes: Sequence[Hashable] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Map labels of any hashable kind to the class indices ``0..C-1``.

    Without ``classes``, the classes are the distinct values of ``y`` in
    sorted order (``np.unique``'s order, as scikit-learn's ``LabelEncoder``
    uses), and label ``v`` becomes the position of ``v`` among them. With
    ``classes``, their order is kept: ``classes[k]`` becomes ``k``. Values
    that compare equal are one class (``1``, ``1.0`` and ``True`` too).

    Args:
        y: the labels: a list or tuple (each element one label, tuples
            included), a numpy array or a tensor of any shape, or another
            iterable such as a pandas Series.
        classes: the classes, each once, in the order to number them; every
            label must be one of them. Needed to number labels that cannot be
            sorted together (e.g. ints and strings mixed).

    Returns:
        ``(codes, classes)``: int64 codes of ``y``'s shape (a list gives shape
        ``[len(y)]``), and the list of classes, numpy scalars as Python values.

    Raises:
        ClassWeightError: for a ``y`` that is not a sequence of labels, an
            unhashable or NaN label, labels of types that cannot be sorted
            (without ``classes``), repeated or unhashable ``classes``, and
            labels not among ``classes`` (naming a few, with their number).

    Example:
        >>> codes, classes = encode_labels(["cat", "dog", "cat", "emu"])
        >>> codes, classes
        (array([0, 1, 0, 2]), ['cat', 'dog', 'emu'])
        >>> encode_labels([-1, 1, 1, 7])
        (array([0, 1, 1, 2]), [-1, 1, 7])
        >>> encode_labels(["b", "a"], classes=["b", "a"])
        (array([0, 1]), ['b', 'a'])
    """
    values = _as_labels(y)
    flat = values.reshape(-1)
    if classes is None:
        uniques, inverse = _unique(flat, sort=True)
        return inverse.reshape(values.shape), uniques
    wanted = _check_classes(classes)
    position = {c: k for k, c in enumerate(wanted)}
    uniques, inverse = _unique(flat, sort=False)
    lookup = np.array([position.get(u, -1) for u in uniques], dtype=np.int64)
    outside = np.flatnonzero(lookup < 0)
    if outside.size:
        labels_outside = int(np.isin(inverse, outside).sum())
        names = ", ".join(shown(uniques[i], 30) for i in outside[:_SHOWN_VALUES]) + (
            ", ..." if outside.size > _SHOWN_VALUES else ""
        )
        raise ClassWeightError(
            f"Expected every label to be one of the {len(wanted)} `classes`, but {labels_outside} "
            f"{'label takes' if labels_outside == 1 else 'labels take'} {outside.size} other value{'s' if outside.size != 1 else ''}: {names}"
        )
    codes = lookup[inverse] if inverse.size else inverse
    return codes.reshape(values.shape), wanted


def class_weight_dict(
    y: Any, method: str = "balanced", *, classes: Sequence[Hashable] | None = None, **params: Any
) -> dict[Any, float]:
    """A ``{label: weight}`` dict for scikit-learn's ``class_weight=`` parameter.

    ``method="balanced"`` (the default) is scikit-learn's formula,
    ``n_samples / (n_classes * count_c)`` over the classes present, computed
    in float64 as scikit-learn computes it: the values equal
    ``compute_class_weight("balanced", classes=np.unique(y), y=y)`` for any
    labels. As in scikit-learn, every class of ``classes`` must then occur in
    ``y``.

    Other methods are :func:`~classweights.weights_from_counts` on the counts
    of the encoded labels, with that function's defaults: ``smooth=1`` and
    ``normalize=True``, so the weights have mean 1 over the classes (float32
    values). Raw formulas such as ``1 / count_c`` would scale the whole loss
    down by the number of samples, and with it the weight of a
    scikit-learn estimator's regularisation. ``balanced`` with ``smooth``,
    ``normalize`` or ``clip`` given also goes through ``weights_from_counts``,
    with ``smooth=0, normalize=False`` unless given.

    Args:
        y: the labels, any hashable values (see :func:`encode_labels`); all
            elements are counted, whatever the shape.
        method: a name in :data:`~classweights.METHODS` (default ``"balanced"``).
        classes: the classes (each once); by default the distinct values of ``y``.
            Other methods give classes absent from ``y`` a weight by the
            zero-count policy of ``weights_from_counts``.
        **params: options and parameters of ``weights_from_counts``
            (``smooth``, ``normalize``, ``clip``, ``beta``, ``c``).

    Returns:
        dict from each class (a Python value) to its weight (a Python float),
        in the order of the classes.

    Raises:
        ClassWeightError: as :func:`encode_labels`; for an empty ``y``; for
            ``balanced`` with classes that do not occur in ``y``; and as
            ``weights_from_counts`` for the method and its parameters.

    Example:
        >>> class_weight_dict(["cat", "cat", "cat", "dog"])  # e.g. LogisticRegression(class_weight=...)
        {'cat': 0.6666666666666666, 'dog': 2.0}
        >>> weights = class_weight_dict([-1, -1, -1, 1], "inverse")  # 1/(n+1), mean 1 over the classes
        >>> {label: round(w, 4) for label, w in weights.items()}
        {-1: 0.6667, 1: 1.3333}
    """
    if "ignore_index" in params:
        raise ClassWeightError(
            "Expected no `ignore_index` for class_weight_dict (it numbers classes, not labels), but got one; drop those labels from `y`"
        )
    codes, found = encode_labels(y, classes)
    if codes.size == 0:
        raise ClassWeightError("Expected at least one label, but `y` is empty")
    counts = np.bincount(codes.reshape(-1), minlength=len(found))
    if method == "balanced" and not params:
        absent = [c for c, n in zip(found, counts.tolist()) if n == 0]
        if absent:
            names = ", ".join(shown(c, 30) for c in absent[:_SHOWN_VALUES]) + (
                ", ..." if len(absent) > _SHOWN_VALUES else ""
            )
            raise ClassWeightError(
                f"Expected every class of `classes` to occur in `y` for method 'balanced' (scikit-learn requires it too), "
                f"but {len(absent)} {'does' if len(absent) == 1 else 'do'} not: {names}; leave them out of `classes` or pick another method"
            )
        # scikit-learn's expression, operation for operation, so the float64 results are the same
        weights = codes.size / (len(found) * counts.astype(np.float64))
        return dict(zip(found, weights.tolist()))
    if method == "balanced":
        params = {"smooth": 0.0, "normalize": False, **params}
    if needs_image_pixels(method) and params.get("image_pixels") is None:
        params["image_pixels"] = count_label_stats(codes, len(found), presence=True).image_pixels
    weights = weights_from_counts(counts, method, **params)
    return dict(zip(found, weights.tolist()))


# ------------------------------------------------------------- helpers ----


def _as_labels(y: Any) -> np.ndarray:
    """``y`` as a numpy array: typed for numbers and numpy strings, of Python objects otherwise."""
    if isinstance(y, torch.Tensor):
        check_dense_tensor(y, "`y`")
        tensor = y.detach().cpu()
        array = (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()
    elif isinstance(y, np.ndarray):
        if isinstance(y, np.ma.MaskedArray):
            raise ClassWeightError("Expected `y` to be plain labels, but got a masked array; pass .compressed()")
        array = y
    elif isinstance(y, (str, bytes, Mapping, set, frozenset)) or not _iterable(y):
        raise ClassWeightError(
            f"Expected `y` to be a sequence of labels (a list, an array or a tensor), but got {shown(y)} of type {type(y).__name__}"
        )
    elif _array_like(y):  # pandas Series, xarray and others that numpy converts element for element
        array = np.asarray(y)
    else:
        array = _from_items(list(y))
    if array.ndim == 0:
        raise ClassWeightError(f"Expected `y` to be a sequence of labels, but got a single value {shown(array.item())}")
    if array.dtype.kind in "fc" and array.size and bool(np.isnan(array).any()):
        i = int(np.flatnonzero(np.isnan(array.reshape(-1)))[0])
        raise ClassWeightError(
            f"Expected labels, but label {i} (flat index) is NaN (a missing value, which no class equals)"
        )
    if array.dtype.kind == "V":
        raise ClassWeightError(f"Expected `y` to hold labels, but got the structured dtype {array.dtype}")
    return array


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _array_like(value: Any) -> bool:
    return hasattr(value, "__array__") and not isinstance(value, (list, tuple))


def _from_items(items: list[Any]) -> np.ndarray:
    """A 1-D array of ``items``: typed when they are all ints or all floats, else of objects (each item one label).

    ``np.asarray`` is not used on mixed items: it would turn ``[1, "a"]`` into
    the strings ``["1", "a"]``, and a list of tuples into a 2-D array.
    """
    kinds = {type(v) for v in items}
    if kinds and kinds <= {int}:
        try:
            return np.array(items, dtype=np.int64)
        except OverflowError:  # beyond int64: Python's own ints still sort and hash
            pass
    if kinds == {float}:
        return np.array(items, dtype=np.float64)
    return np.fromiter(items, dtype=object, count=len(items))


def _unique(flat: np.ndarray, *, sort: bool) -> tuple[list[Any], np.ndarray]:
    """The distinct values of ``flat`` (sorted, or as numpy gives them) and the int64 index of each label among them."""
    if flat.dtype != object:
        uniques, inverse = np.unique(flat, return_inverse=True)
        return uniques.tolist(), inverse.reshape(-1).astype(np.int64, copy=False)
    first: dict[Any, int] = {}
    for i, value in enumerate(flat.tolist()):
        try:
            first.setdefault(value, len(first))
        except TypeError:
            raise ClassWeightError(
                f"Expected hashable labels, but label {i} is {shown(value)} of type {type(value).__name__}"
            ) from None
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            raise ClassWeightError(f"Expected labels, but label {i} is NaN (a missing value, which no class equals)")
    uniques = list(first)
    inverse = np.fromiter((first[v] for v in flat.tolist()), dtype=np.int64, count=flat.size)
    if sort:
        try:
            order = sorted(range(len(uniques)), key=uniques.__getitem__)
        except TypeError:
            types = sorted({type(v).__name__ for v in uniques})
            raise ClassWeightError(
                f"Expected labels that can be sorted together (all numbers or all strings), but got types {', '.join(types)}; "
                "pass classes= to give their order"
            ) from None
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        uniques, inverse = [uniques[k] for k in order], rank[inverse]
    return [_plain(v) for v in uniques], inverse


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_classes(classes: Any) -> list[Any]:
    if isinstance(classes, torch.Tensor):
        check_dense_tensor(classes, "`classes`")
        items = classes.detach().cpu().reshape(-1).tolist()
    elif isinstance(classes, np.ndarray):
        items = [_plain(v) for v in classes.reshape(-1).tolist()]
    elif isinstance(classes, (list, tuple)):
        items = [_plain(v) for v in classes]
    else:
        raise ClassWeightError(
            f"Expected `classes` to be a list, a tuple, an array or None, but got {type(classes).__name__}"
        )
    seen: dict[Any, int] = {}
    for value in items:
        try:
            seen[value] = seen.get(value, 0) + 1
        except TypeError:
            raise ClassWeightError(
                f"Expected hashable `classes`, but got {shown(value)} of type {type(value).__name__}"
            ) from None
        if isinstance(value, float) and math.isnan(value):
            raise ClassWeightError("Expected `classes` to be values labels can equal, but got NaN")
    repeated = [v for v, n in seen.items() if n > 1]
    if repeated:
        raise ClassWeightError(
            f"Expected each class once in `classes`, but {shown(repeated[0])} appears {seen[repeated[0]]} times"
        )
    return items
