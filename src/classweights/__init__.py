"""classweights: turn label counts into loss weights for imbalanced classification and segmentation.

Data flows one way::

    labels --count_labels--> counts --weights_from_counts--> weights --validate_weights--> loss

Example:
    >>> import torch, classweights
    >>> labels = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 2]])
    >>> counts = classweights.count_labels(labels, num_classes=3)
    >>> counts
    tensor([6, 1, 1])
    >>> classweights.weights_from_counts(counts)  # sqrt_inverse, sums to 3
    tensor([0.6327, 1.1837, 1.1837])
"""

from ._checks import MAX_CLASSES
from ._errors import ClassWeightError
from .counting import LabelStats, count_label_stats, count_labels, fingerprint_algorithm
from .encoding import class_weight_dict, encode_labels
from .files import LabelFile, read_labels
from .methods import METHODS, check_method, register_method, weights_from_counts
from .multilabel import MultilabelCounts, count_multilabel, pos_weight
from .pipeline import compute_class_weights, count_and_weigh
from .sampling import make_sampler, sample_weights
from .storage import (
    FORMAT_VERSION,
    atomic_open,
    atomic_write_bytes,
    load_class_weights,
    read_small_file,
    save_class_weights,
)
from .validation import validate_weights

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "MAX_CLASSES",
    "METHODS",
    "ClassWeightError",
    "LabelFile",
    "LabelStats",
    "MultilabelCounts",
    "atomic_open",
    "atomic_write_bytes",
    "check_method",
    "class_weight_dict",
    "compute_class_weights",
    "count_and_weigh",
    "count_label_stats",
    "count_labels",
    "count_multilabel",
    "encode_labels",
    "fingerprint_algorithm",
    "load_class_weights",
    "make_sampler",
    "pos_weight",
    "read_labels",
    "read_small_file",
    "register_method",
    "sample_weights",
    "save_class_weights",
    "validate_weights",
    "weights_from_counts",
]
