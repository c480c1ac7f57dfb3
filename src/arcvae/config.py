"""Training configuration: one dataclass, every default in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import ArcvaeError

Device = Literal["auto", "cpu", "cuda", "mps"]
SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (torch takes them all; numpy's global generator gets seed mod 2**32)


@dataclass
class TrainConfig:
    # data
    data: str | None = None  # .npz with train/val/test; None: the default corpus in the cache folder
    out: str | None = None  # run folder; None: runs/<timestamp>[-overfit]
    num_colors: int = 10
    # mode
    overfit_batch: bool = False  # memorise the first `overfit_samples` training grids
    quick_test: bool = False  # a few short epochs on small subsets, for smoke runs
    overfit_samples: int = 32  # unique grids in the overfit batch
    overfit_repeats: int = 50  # steps per overfit epoch (the batch repeated)
    target_accuracy: float = 0.95  # overfit mode stops once pixel accuracy reaches this
    # class weights
    use_class_weights: bool = True
    use_cached_weights: bool = False  # reuse a matching cached weights file instead of recounting
    weights_method: str = "sqrt_inverse"
    weights_smooth: float = 1.0
    weights_source: Literal["full", "batch"] = "full"  # count the full training split, or (overfit mode) only the batch
    # model and loss
    latent_dim: int = 32
    focal_gamma: float = 2.0
    beta_schedule: Literal["linear_warmup", "cyclical", "constant"] = "linear_warmup"
    beta_max: float = 1.0
    # KL annealing: beta stays 0 for the first 10 epochs so the decoder learns to use the
    # latent code before the KL term can collapse it (with a 1-epoch warm-up the overfit
    # batch stalls at ~92% pixel / ~2% foreground accuracy), then ramps over 10 epochs.
    beta_warmup_epochs: float = 10.0
    beta_ramp_epochs: float = 10.0
    beta_cycle_epochs: float = 10.0
    free_bits: float = 0.0  # nats per latent dimension per sample; 0 disables
    # optimisation
    epochs: int = 50
    max_epochs: int | None = None  # stop after this many epochs; the LR and beta schedules still span `epochs` (studies)
    batch_size: int = 128
    lr: float = 5e-4
    min_lr: float = 1e-5  # cosine schedule floor
    grad_clip: float = 1.0
    patience: int = 10  # normal mode: epochs without validation improvement before stopping
    # bookkeeping
    log_every_n_steps: int = 10
    seed: int = 42
    device: Device = "auto"
    wandb: bool = False  # also log to Weights & Biases (the optional wandb extra; WANDB_MODE=offline works without network)

    def __post_init__(self) -> None:
        for name in ("overfit_batch", "quick_test", "use_class_weights", "use_cached_weights", "wandb"):
            if not isinstance(getattr(self, name), bool):
                raise ArcvaeError(f"Expected {name} to be true or false, but got {getattr(self, name)!r}")
        for name in ("data", "out"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ArcvaeError(f"Expected {name} to be a path or None, but got {getattr(self, name)!r}")
        if not isinstance(self.weights_method, str):
            raise ArcvaeError(f"Expected weights_method to be a method name, but got {self.weights_method!r}")
        if isinstance(self.num_colors, bool) or not isinstance(self.num_colors, int) or not 2 <= self.num_colors <= 256:
            raise ArcvaeError(f"Expected num_colors to be an integer from 2 to 256, but got {self.num_colors!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ArcvaeError(f"Expected seed to be an integer from 0 to 2**63 - 1, but got {self.seed!r}")
        positive_ints = ("epochs", "batch_size", "latent_dim", "overfit_samples", "overfit_repeats", "log_every_n_steps", "patience")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArcvaeError(f"Expected {name} to be a positive integer, but got {value!r}")
        if self.max_epochs is not None and (isinstance(self.max_epochs, bool) or not isinstance(self.max_epochs, int) or self.max_epochs < 1):
            raise ArcvaeError(f"Expected max_epochs to be a positive integer or None, but got {self.max_epochs!r}")
        for name in ("lr", "min_lr", "grad_clip", "beta_max", "free_bits", "weights_smooth", "focal_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise ArcvaeError(f"Expected {name} to be a finite number {'> 0' if name == 'lr' else '>= 0'}, but got {value!r}")
        if isinstance(self.target_accuracy, bool) or not isinstance(self.target_accuracy, (int, float)) or not 0 < self.target_accuracy <= 1:
            raise ArcvaeError(f"Expected target_accuracy in (0, 1], but got {self.target_accuracy}")
        if self.beta_schedule not in ("linear_warmup", "cyclical", "constant"):
            raise ArcvaeError(f"Expected beta_schedule to be linear_warmup, cyclical or constant, but got {self.beta_schedule!r}")
        for name, low in (("beta_warmup_epochs", "0"), ("beta_ramp_epochs", "a"), ("beta_cycle_epochs", "a")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (low == "a" and value == 0):
                raise ArcvaeError(f"Expected {name} to be a finite number {'>= 0' if low == '0' else '> 0'}, but got {value!r}")
        if self.weights_source not in ("full", "batch"):
            raise ArcvaeError(f"Expected weights_source to be 'full' or 'batch', but got {self.weights_source!r}")
        if self.weights_source == "batch" and not self.overfit_batch:
            raise ArcvaeError("weights from the overfit batch alone (weights_source='batch', --weights-from batch) need overfit mode (--overfit-batch)")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ArcvaeError(f"Expected device to be auto, cpu, cuda or mps, but got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
