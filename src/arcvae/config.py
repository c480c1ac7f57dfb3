"""Training configuration: every option of ``arcvae train`` declared once.

Each field of :class:`TrainConfig` is declared with :func:`option`: its type,
default, help text and range, in one place. Everything else is derived from
the declarations: the checks below, the ``arcvae train`` command
(``commands/train.py`` builds its options from :func:`command_line_options`),
``--resume`` (a run's saved options are ``TrainConfig.from_dict`` of its
checkpoint) and the study (its arms are ``TrainConfig`` fields). A field whose
declaration has ``command_line=False`` is a fixed setting: no option, but
recorded in the run's ``config.json`` like the others.

This module imports only the standard library, so ``arcvae --help`` stays light.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields
from functools import cache
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ArcvaeError

# The choice sets, declared once; the command line offers exactly these.
BetaScheduleName = Literal["linear_warmup", "cyclical", "constant"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
# count the full training split; or the batch: the overfit batch, or (normal mode) every training batch anew
WeightsFrom = Literal["full", "batch"]
TargetMetric = Literal["pixel", "foreground", "balanced", "perfect"]  # what --target-accuracy applies to
# each target metric's key in an evaluation's metrics (metrics.Tally.summary)
TARGET_KEYS = {
    "pixel": "pixel_accuracy",
    "foreground": "foreground_accuracy",
    "balanced": "balanced_accuracy",
    "perfect": "perfect_rate",
}

SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (torch takes them all; numpy's global generator gets seed mod 2**32)
QUICK_TEST = {"epochs": 3, "overfit_repeats": 10, "train_samples": 2048, "val_samples": 512}  # --quick-test limits


@dataclass(frozen=True)
class Option:
    """The declaration of one :class:`TrainConfig` field, beside its type and default."""

    help: str
    low: float | None = None  # smallest value of a number
    high: float | None = None  # largest value of a number
    low_open: bool = False  # ``low`` itself is refused (``lr > 0``); the command line still shows ``x>=low``
    flag: str | None = None  # a boolean's flag when it turns a default of True off (``--no-class-weights``)
    path: bool = False  # a file or folder: ``<path>`` on the command line, a string in the config
    command_line: bool = True  # False: a fixed setting, with no option of ``arcvae train``


def option(default: Any, help: str, **declaration: Any) -> Any:
    """A :class:`TrainConfig` field: its default and its :class:`Option` declaration."""
    return field(default=default, metadata={"option": Option(help, **declaration)})


def fixed(default: Any, help: str, **declaration: Any) -> Any:
    """A :class:`TrainConfig` field without a command-line option (recorded in ``config.json`` all the same)."""
    return option(default, help, command_line=False, **declaration)


@dataclass
class TrainConfig:
    """Every option of a training run. See docs/cli.md (``arcvae train``) for what each one does."""

    # data and mode
    data: str | None = option(
        None,
        "Corpus .npz with train/val/test (default: the synthetic corpus in the cache folder, generated on first use).",
        path=True,
    )
    overfit_batch: bool = option(
        False, "Memorise one batch of 32 training grids (50 steps per epoch) until --target-accuracy."
    )
    quick_test: bool = option(False, "A short smoke run: at most 3 epochs, small subsets.")
    num_colors: int = fixed(10, "Colours of the grids (classes of the loss).", low=2, high=256)
    overfit_samples: int = fixed(32, "Unique grids in the overfit batch.", low=1)
    overfit_repeats: int = fixed(50, "Steps per overfit epoch (the batch repeated).", low=1)

    # class weights
    use_class_weights: bool = option(
        True, "Plain focal loss without class weights (for comparison).", flag="--no-class-weights"
    )
    use_cached_weights: bool = option(
        False, "Reuse cached weights for the same data and parameters instead of recounting."
    )
    weights_method: str = option("sqrt_inverse", "Class-weight method from classweights.METHODS.")
    weights_smooth: float = option(1.0, "Pseudo-count added to every class count.", low=0)
    weights_from: WeightsFrom = option(
        "full",
        "Count the full training split, or (for comparison) only the batch: the overfit batch, or in normal mode "
        "every training batch anew.",
    )

    # optimisation
    epochs: int = option(50, "Maximum epochs.", low=1)
    max_epochs: int | None = fixed(
        None, "Stop after this many epochs; the LR and beta schedules still span `epochs`.", low=1
    )
    # The overfit learning rate follows the schedule of the default 50-epoch run whatever --epochs, which only
    # stops the run sooner: with a cosine over --epochs, asking for fewer epochs would lower the learning rate.
    overfit_schedule_epochs: int = fixed(
        50, "Overfit mode: epochs the cosine learning-rate schedule spans, whatever --epochs.", low=1
    )
    batch_size: int = option(128, "Batch size in normal mode (overfit mode uses its batch of 32).", low=1)
    lr: float = option(5e-4, "Adam learning rate (cosine-annealed to 1e-5).", low=0, low_open=True)
    min_lr: float = fixed(1e-5, "Floor of the cosine learning-rate schedule.", low=0)
    grad_clip: float = fixed(1.0, "Largest gradient norm (0: no clipping).", low=0)

    # model and loss
    latent_dim: int = option(32, "Latent dimensions of the VAE.", low=1)
    focal_gamma: float = fixed(2.0, "Focusing parameter of the focal loss.", low=0)
    beta_schedule: BetaScheduleName = option("linear_warmup", "KL weight schedule.")
    beta_max: float = option(1.0, "Final (or constant) KL weight.", low=0)
    # KL annealing: beta stays 0 for the first 10 epochs so the decoder learns to use the
    # latent code before the KL term can collapse it (with a 1-epoch warm-up the overfit
    # batch stalls at ~92% pixel / ~2% foreground accuracy), then ramps over 10 epochs.
    beta_warmup_epochs: float = option(10.0, "linear_warmup: epochs with beta = 0 before the ramp.", low=0)
    beta_ramp_epochs: float = option(
        10.0, "linear_warmup: epochs to ramp beta from 0 to --beta-max.", low=0, low_open=True
    )
    beta_cycle_epochs: float = fixed(10.0, "cyclical: epochs per cycle.", low=0, low_open=True)
    free_bits: float = option(0.0, "Free bits: minimum KL per latent dimension in nats (0 = off).", low=0)

    # stopping
    target_accuracy: float = option(
        0.95, "Overfit mode stops when the --target-metric reaches this.", low=0, low_open=True, high=1
    )
    target_metric: TargetMetric = option(
        "pixel",
        "What --target-accuracy applies to: pixel, foreground (non-black) or balanced (mean per-colour) accuracy, "
        "or the perfect-grid rate.",
    )
    patience: int = fixed(
        10, "Normal mode: epochs without a better validation balanced accuracy before stopping.", low=1
    )
    train_samples: int | None = fixed(None, "Normal mode: train on the first N training grids (studies).", low=1)
    val_samples: int | None = fixed(None, "Normal mode: validate on the first N validation grids (studies).", low=1)

    # bookkeeping
    seed: int = option(
        42,
        "Random seed, any integer from 0 to 2**63 - 1 (a timestamp in ms will do).",
        low=0,
        high=SEED_LIMIT - 1,
    )
    device: DeviceName = option("auto", "Where to train.")
    out: str | None = option(None, "Run folder (default: runs/<time>).", path=True)
    log_every_n_steps: int = option(10, "Print per-class accuracy and log metrics every N steps.", low=1)
    wandb: bool = option(
        False,
        'Also log to Weights & Biases (pip install "classweights[wandb]"; WANDB_MODE=offline logs without network).',
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            _check(spec.name, getattr(self, spec.name), _field_types()[spec.name], spec.metadata["option"])

    # what the options mean for a run

    @property
    def planned_epochs(self) -> int:
        """The epochs a run may last: ``epochs``, at most 3 in a quick test."""
        return min(self.epochs, QUICK_TEST["epochs"]) if self.quick_test else self.epochs

    @property
    def schedule_epochs(self) -> int:
        """The epochs the cosine learning-rate schedule spans: :attr:`planned_epochs`, or in overfit mode a fixed
        length (``overfit_schedule_epochs``), so that ``--epochs`` only limits an overfit run."""
        return self.overfit_schedule_epochs if self.overfit_batch else self.planned_epochs

    @property
    def per_batch_weights(self) -> bool:
        """Normal mode with ``weights_from="batch"``: every training batch is weighted by its own counts."""
        return self.use_class_weights and self.weights_from == "batch" and not self.overfit_batch

    @property
    def target_key(self) -> str:
        """The metric ``target_accuracy`` applies to, as an evaluation names it (``pixel_accuracy``, ...)."""
        return TARGET_KEYS[self.target_metric]

    @property
    def sample_limits(self) -> tuple[int | None, int | None]:
        """Normal mode: how many of the first training and validation grids a run uses (``None``: all)."""
        if self.quick_test:
            return QUICK_TEST["train_samples"], QUICK_TEST["val_samples"]
        return self.train_samples, self.val_samples

    @property
    def epochs_to_run(self) -> int:
        """The epochs actually run: :attr:`planned_epochs`, cut short by ``max_epochs`` (studies)."""
        return min(self.planned_epochs, self.max_epochs or self.planned_epochs)

    @property
    def steps_per_overfit_epoch(self) -> int:
        """Overfit mode: how often the batch is repeated per epoch."""
        return QUICK_TEST["overfit_repeats"] if self.quick_test else self.overfit_repeats

    # saved options (config.json and checkpoints)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The configuration saved by :meth:`to_dict`; unknown keys are ignored."""
        values = dict(values)
        if "weights_source" in values:  # the name of ``weights_from`` in runs saved before it was renamed
            values.setdefault("weights_from", values.pop("weights_source"))
        known = {spec.name for spec in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def command_line_options() -> list[tuple[Field[Any], Option, Any]]:
    """The options of ``arcvae train``, in the order of its ``--help``: each field, its declaration and its type."""
    types = _field_types()
    declared = [(spec, spec.metadata["option"], types[spec.name]) for spec in fields(TrainConfig)]
    return [(spec, declaration, kind) for spec, declaration, kind in declared if declaration.command_line]


def flag_of(name: str, declaration: Option) -> str:
    """The command-line name of the field ``name``: ``--batch-size``, or its declared flag (``--no-class-weights``)."""
    return declaration.flag or f"--{name.replace('_', '-')}"


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a choice type, e.g. ``choices(DeviceName)``."""
    return get_args(kind)


@cache
def _field_types() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def _check(name: str, value: Any, kind: Any, declaration: Option) -> None:
    """Raise an :class:`ArcvaeError` naming ``name`` unless ``value`` is of its declared type and range."""
    optional = type(None) in get_args(kind)
    if optional and value is None:
        return
    base = next(arg for arg in get_args(kind) if arg is not type(None)) if optional else kind
    if get_origin(base) is Literal:
        ok, expected = value in get_args(base), _one_of(get_args(base))
    elif base is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif base is str:
        ok, expected = isinstance(value, str), "a path" if declaration.path else "a string"
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and _in_range(value, declaration)
        expected = _integer_range(declaration)
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok, expected = number and _in_range(value, declaration), _number_range(declaration)
    if not ok:
        raise ArcvaeError(f"Expected {name} to be {expected}{' or None' if optional else ''}, but got {value!r}")


def _in_range(value: float, declaration: Option) -> bool:
    low, high = declaration.low, declaration.high
    above = low is None or (value > low if declaration.low_open else value >= low)
    return above and (high is None or value <= high)


def _integer_range(declaration: Option) -> str:
    if declaration.high is None:
        return "a positive integer" if declaration.low == 1 else f"an integer >= {declaration.low}"
    high = "2**63 - 1" if declaration.high == SEED_LIMIT - 1 else f"{declaration.high}"
    return f"an integer from {declaration.low} to {high}"


def _number_range(declaration: Option) -> str:
    low = f"{declaration.low:g}"
    if declaration.high is not None:
        return f"a finite number in {'(' if declaration.low_open else '['}{low}, {declaration.high:g}]"
    return f"a finite number {'>' if declaration.low_open else '>='} {low}"


def _one_of(values: tuple[str, ...]) -> str:
    """``linear_warmup, cyclical or constant``."""
    return f"{', '.join(values[:-1])} or {values[-1]}"
