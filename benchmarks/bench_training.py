"""Training throughput: ``arcvae train --overfit-batch`` against a bare PyTorch loop, plus CPU speed-ups of the step.

Run: python benchmarks/bench_training.py
Data: 20,000 x 16 x 16 uint8 grids (the shared corpus if present, see _common.arc_like_labels),
saved as a temporary corpus; the overfit batch is its first 32 grids.
Target (2-core CPU): the trainer in overfit mode (progress bars, metrics, evaluation every
log_every_n_steps, logging, checkpoints) runs >= 0.95x the steps/s of a bare loop doing only
forward, focal + beta * KL loss, backward, grad-norm clip, Adam step and cosine scheduler step.

The trainer is timed end to end twice, with E1 and E2 epochs (fresh run folders), and its
steps/s is (steps2 - steps1) / (t2 - t1): the fixed start-up (data, class weights, model)
cancels. Every measurement is repeated 3 times, interleaved, and the best is kept (the least
disturbed by other load). The second table times, one by one, what the overfit loop does
besides the bare step (amortised per step), to show where the trainer loses time; the third
times candidate CPU speed-ups of the bare step (the mallopt row changes the process, so it runs last).
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import arc_like_labels, best_of, machine, table, verdict
from rich.console import Console

from arcvae.checkpoints import save_checkpoint
from arcvae.config import TrainConfig
from arcvae.data import load_split, save_corpus
from arcvae.loop import evaluate
from arcvae.losses import FocalLoss, kl_divergence
from arcvae.metrics import Tally
from arcvae.model import BetaVAE, predictions
from arcvae.report import Reporter
from arcvae.run_files import BackgroundWriter
from arcvae.state import make_optimizer
from arcvae.trainer import train
from arcvae.weight_cache import WeightCache, WeightSpec
from arcvae.weights import resolve_class_weights

ROUNDS = 3  # repeats of every measurement; the best is kept
BARE_STEPS, WARMUP_STEPS = 300, 20  # main table
VARIANT_STEPS = 200  # speed-up table, per round and variant
EPOCHS = (4, 10)  # the two trainer runs; 50 steps per epoch (overfit_repeats)
TARGET = 0.95

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------ the bare loop ----


def one_hot_permute(grids: torch.Tensor, num_colors: int) -> torch.Tensor:
    """What BetaVAE.encode does: F.one_hot, permute to [B, C, H, W], float."""
    return F.one_hot(grids.long(), num_colors).permute(0, 3, 1, 2).float()


def one_hot_scatter(grids: torch.Tensor, num_colors: int) -> torch.Tensor:
    """The same tensor, written straight into a contiguous [B, C, H, W] float buffer."""
    out = torch.zeros(grids.shape[0], num_colors, *grids.shape[1:], dtype=torch.float32, device=grids.device)
    return out.scatter_(1, grids.long().unsqueeze(1), 1.0)


def variant_forward(
    model: BetaVAE, *, one_hot: Callable[[torch.Tensor, int], torch.Tensor], channels_last: bool
) -> Forward:
    """BetaVAE.forward in training mode, with the one-hot encoding and memory format swapped."""

    def forward(grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = one_hot(grids, model.num_colors)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = model.encoder(x)
        mu, logvar = model.fc_mu(h).clamp(-5.0, 5.0), model.fc_logvar(h).clamp(-20.0, 2.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return model.decode(z), mu, logvar

    return forward


class BareLoop:
    """A model, its optimizer and scheduler, and a step that does nothing but train.

    Built and warmed up once; ``time(n)`` then times ``n`` more steps. ``compile_s``
    is the wall time of the first step (with ``compile=True``, the compilation).
    """

    def __init__(self, batch: torch.Tensor, alpha: torch.Tensor, config: TrainConfig, *, channels_last: bool = False,
                 scatter: bool = False, adam: dict[str, bool] | None = None, compile: bool = False,
                 threads: int | None = None) -> None:  # fmt: skip
        self.threads = threads
        torch.manual_seed(config.seed)
        model = BetaVAE(config.num_colors, config.latent_dim)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        loss_fn = FocalLoss(alpha=alpha, gamma=config.focal_gamma)
        optimizer = (
            make_optimizer(model.parameters(), config.lr)
            if adam is None
            else torch.optim.Adam(model.parameters(), lr=config.lr, **adam)
        )
        total = WARMUP_STEPS + ROUNDS * max(BARE_STEPS, VARIANT_STEPS)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=config.min_lr)
        forward: Forward = model
        if channels_last or scatter:
            forward = variant_forward(
                model, one_hot=one_hot_scatter if scatter else one_hot_permute, channels_last=channels_last
            )
            _check_same(model, forward, batch)
        if compile:
            forward = torch.compile(model)
        beta, grad_clip, free_bits = config.beta_max, config.grad_clip, config.free_bits

        def step() -> None:
            logits, mu, logvar = forward(batch)
            loss = loss_fn(logits, batch) + beta * kl_divergence(mu, logvar, free_bits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()

        self.step = step
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        with self._threads():
            start = time.perf_counter()
            step()
            self.compile_s = time.perf_counter() - start
            for _ in range(WARMUP_STEPS - 1):
                step()

    @contextmanager
    def _threads(self) -> Iterator[None]:
        saved = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(saved)

    def time(self, steps: int) -> float:
        """Seconds for ``steps`` steps."""
        step = self.step
        with self._threads():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            return time.perf_counter() - start


def _check_same(model: BetaVAE, forward: Forward, batch: torch.Tensor) -> None:
    """A rewritten forward must give the model's own output (same random draw)."""
    with torch.no_grad():
        torch.manual_seed(0)
        expected = model(batch)
        torch.manual_seed(0)
        got = forward(batch)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------- the trainer ----


def run_trainer(data: Path, runs: Path, epochs: int, *, terminal: bool) -> tuple[float, int, str]:
    """Wall seconds, steps and console output of one overfit run in a fresh folder."""
    out = Path(tempfile.mkdtemp(prefix=f"e{epochs}-", dir=runs)) / "run"
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120) if terminal else Console(file=buffer)
    config = TrainConfig(
        data=str(data), out=str(out), overfit_batch=True, target_accuracy=1.0, epochs=epochs, device="cpu"
    )
    start = time.perf_counter()
    result = train(config, Reporter(console))
    seconds = time.perf_counter() - start
    expected = epochs * config.overfit_repeats
    if result.steps != expected:
        raise SystemExit(
            f"the trainer ran {result.steps} steps, not {expected} (it stopped early?); the timing would not compare"
        )
    shutil.rmtree(out.parent, ignore_errors=True)
    return seconds, result.steps, buffer.getvalue()


def trainer_extras(
    loop: BareLoop, batch: torch.Tensor, config: TrainConfig, tmp: Path
) -> tuple[list[list[str]], float]:
    """Time what the overfit loop does besides the bare step, amortised per step.

    Returns table rows and the extra ms per step (indented rows are for comparison only).
    """
    model, loss_fn = loop.model, loop.loss_fn
    with torch.no_grad():
        logits = model(batch)[0].requires_grad_()  # as in the step: a leaf of a graph, detached for the tally
    assert torch.equal(logits.detach().argmax(dim=1), logits.detach().max(dim=1).indices)
    preds = logits.detach().max(dim=1).indices
    tally = Tally.zeros(config.num_colors)
    reporter = Reporter(Console(file=io.StringIO()))
    per_class = tally.summary()["per_class_accuracy"]
    metrics = (tmp / "metrics.jsonl").open("a", encoding="utf-8")
    checkpoint = tmp / "checkpoint.pt"

    def log_line() -> None:
        record = {"step": 1, **tally.summary(), **{f"eval_{k}": v for k, v in tally.summary().items()}}
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    def checkpoint_state() -> dict[str, object]:
        return {"model": model.state_dict(), "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
                "config": config.to_dict()}  # fmt: skip

    writer = BackgroundWriter()

    def save_in_the_loop() -> float:
        """What the loop waits for: serialising, then handing the bytes to the writer (the write before is over)."""
        times = []
        for _ in range(5):
            writer.wait()
            start = time.perf_counter()
            save_checkpoint(checkpoint, checkpoint_state(), writer)
            times.append(time.perf_counter() - start)
        writer.wait()
        return min(times)

    every_log, every_epoch = config.log_every_n_steps, config.overfit_repeats
    parts = [
        ("predictions(logits) (tally input)", "train_step", 1, best_of(lambda: predictions(logits.detach()), repeats=7)),
        ("  the same by logits.argmax(dim=1)", "(not used)", 1, best_of(lambda: logits.detach().argmax(dim=1), repeats=7)),
        ("Tally.update", "train_step", 1, best_of(lambda: tally.update(preds, batch), repeats=7)),
        ("evaluate(model, loss_fn, batch, ...)", "overfit_loop", every_log,
         best_of(lambda: evaluate(model, loss_fn, batch, beta=1.0, beta_max=1.0, free_bits=0.0), repeats=7)),
        ("Tally.summary x2 + metrics.jsonl line", "log_step", every_log, best_of(log_line, repeats=7)),
        ("per-class line (Rich print)", "overfit_loop", every_log, best_of(lambda: reporter.per_class(per_class), repeats=7)),
        ("checkpoint: torch.save + hand-off to the writer", "save_state", every_epoch, save_in_the_loop()),
        ("  the same written in the loop (before)", "(not used)", every_epoch,
         best_of(lambda: save_checkpoint(checkpoint, checkpoint_state()), repeats=5)),
    ]  # fmt: skip
    with reporter.epoch_bar("bench", 10**9) as bar:
        parts.append(("bar.advance()", "overfit_loop", 1, best_of(bar.advance, repeats=7)))

    def epoch_bar() -> None:
        with reporter.epoch_bar("Epoch 1/10 [Train]", every_epoch) as bar:
            bar.advance(every_epoch)

    parts.append(("epoch bar: open, close (its last line)", "overfit_loop", every_epoch, best_of(epoch_bar, repeats=7)))
    metrics.close()
    extra = sum(s / every for name, _, every, s in parts if not name.startswith("  ")) * 1e3
    rows = [[name, where, f"every {every}" if every > 1 else "every step", f"{s * 1e3:.3f}", f"{s / every * 1e3:.3f}"]
            for name, where, every, s in parts]  # fmt: skip
    return rows, extra


def set_malloc_no_trim() -> bool:
    """glibc only: keep freed memory (no trim, mmap only above 32 MB), so big tensors stop page-faulting."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(
            libc.mallopt(-3, 32 << 20)
        )  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


# ------------------------------------------------------------------ main ----


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-training-", ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # class-weight cache: never the user's
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")  # a cold torch.compile, timed
        (tmp / "runs").mkdir()
        grids = arc_like_labels(22_000)
        data = save_corpus(
            {"train": grids[:20_000], "val": grids[20_000:21_000], "test": grids[21_000:]}, tmp / "c.npz"
        )

        config = TrainConfig(data=str(data), overfit_batch=True)
        train_split = load_split(data, "train")
        spec = WeightSpec(config.num_colors, config.weights_method, config.weights_smooth)
        weights = resolve_class_weights(
            train_split, spec, key="train", cache=WeightCache(None, read=False), source=str(data)
        )
        alpha = weights.weights
        batch = torch.from_numpy(train_split[: config.overfit_samples].astype(np.int64))

        # -- main table: bare loop against the trainer, interleaved rounds
        bare = BareLoop(batch, alpha, config)
        bare_rates: list[float] = []
        trainer_rates: dict[str, list[float]] = {"plain": [], "terminal": []}
        walls: dict[str, list[tuple[float, float]]] = {"plain": [], "terminal": []}
        rendered = ""
        for _ in range(ROUNDS):
            bare_rates.append(BARE_STEPS / bare.time(BARE_STEPS))
            for kind, kind_rates in trainer_rates.items():
                t1, s1, _out = run_trainer(data, tmp / "runs", EPOCHS[0], terminal=kind == "terminal")
                t2, s2, out = run_trainer(data, tmp / "runs", EPOCHS[1], terminal=kind == "terminal")
                rate = (s2 - s1) / (t2 - t1)
                kind_rates.append(rate)
                walls[kind].append((t1, t2))
                if kind == "terminal":
                    rendered = out
        bare_best = max(bare_rates)
        plain_best, term_best = max(trainer_rates["plain"]), max(trainer_rates["terminal"])
        worst = min(plain_best, term_best)

        def runs(rates: list[float]) -> str:
            return ", ".join(f"{r:.1f}" for r in rates)

        rows = [
            ["bare loop", f"{bare_best:.1f}", f"{1e3 / bare_best:.2f}", runs(bare_rates), "1.00x", "", ""],
            ["trainer, plain console", f"{plain_best:.1f}", f"{1e3 / plain_best:.2f}", runs(trainer_rates["plain"]),
             f"{plain_best / bare_best:.2f}x", f">= {TARGET}x", verdict(plain_best / bare_best, TARGET)],
            ["trainer, terminal console", f"{term_best:.1f}", f"{1e3 / term_best:.2f}", runs(trainer_rates["terminal"]),
             f"{term_best / bare_best:.2f}x", f">= {TARGET}x", verdict(term_best / bare_best, TARGET)],
        ]  # fmt: skip
        print(machine())
        print(f"batch: {tuple(batch.shape)} grids from a {len(train_split):,}-grid corpus; BetaVAE latent {config.latent_dim}, "
              f"Adam lr {config.lr}, cosine per step, focal gamma {config.focal_gamma} + class weights ({config.weights_method}), "
              f"clip {config.grad_clip}")  # fmt: skip
        print(f"bare: {BARE_STEPS} steps after {WARMUP_STEPS} warm-up; trainer: {EPOCHS[0]} and {EPOCHS[1]} epochs of "
              f"{config.overfit_repeats} steps, evaluation every {config.log_every_n_steps}; best of {ROUNDS}")  # fmt: skip
        print(table(rows, ["loop", "steps/s", "ms/step", "all runs", "vs bare", "target", ""]))
        medians = {
            kind: statistics.median(rates) / statistics.median(bare_rates) for kind, rates in trainer_rates.items()
        }
        print(f"ratio trainer/bare (the slower console): {worst / bare_best:.2f}x, target >= {TARGET}x: {verdict(worst / bare_best, TARGET)} "
              f"(ratio of medians: plain {medians['plain']:.2f}x, terminal {medians['terminal']:.2f}x)")  # fmt: skip
        best_walls = {kind: walls[kind][rates.index(max(rates))] for kind, rates in trainer_rates.items()}
        print(f"trainer wall time, best round, {EPOCHS[0]} / {EPOCHS[1]} epochs (start-up included): "
              + ", ".join(f"{kind} {t1:.2f} / {t2:.2f} s" for kind, (t1, t2) in best_walls.items())
              + f"; terminal console rendered live bars: {'yes' if chr(27) + '[' in rendered and 'Epoch' in rendered else 'NO'} "
              f"({len(rendered):,} chars)")  # fmt: skip

        # -- where the trainer's extra time goes: its per-step extras, timed one by one
        print()
        rows, extra = trainer_extras(bare, batch, config, tmp)
        bare_ms = 1e3 / bare_best
        print(f"trainer extras beyond the bare step (ms; bare step {bare_ms:.2f} ms; best of 5-7 calls each)")
        print(table(rows, ["extra", "in", "how often", "ms/call", "ms/step"]))
        print(
            f"sum {extra:.2f} ms/step = {extra / bare_ms:.0%} of the bare step -> predicted trainer/bare {bare_ms / (bare_ms + extra):.2f}x"
        )

        # -- second table: candidate speed-ups of the bare step
        print()
        baseline = BareLoop(batch, alpha, config)
        variants: dict[str, BareLoop | str] = {}
        candidates: dict[str, dict[str, object]] = {
            "channels_last (model + one-hot)": {"channels_last": True},
            "torch.set_num_threads(1) (vs 2)": {"threads": 1},
            "one-hot by scatter_ (no permute)": {"scatter": True},
            "Adam without fused=True (as before)": {"adam": {}},
            "Adam(foreach=True) instead of fused": {"adam": {"foreach": True}},
            "torch.compile(model)": {"compile": True},
        }
        if torch.get_num_threads() == 1:
            del candidates["torch.set_num_threads(1) (vs 2)"]
        if shutil.which(os.environ.get("CC", "gcc")) is None and shutil.which("cc") is None:
            variants["torch.compile(model)"] = "skipped: no C compiler"
            del candidates["torch.compile(model)"]
        for name, options in candidates.items():
            try:
                variants[name] = BareLoop(batch, alpha, config, **options)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001  (a speed-up that fails is reported, not fatal)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                variants[name] = f"failed: {type(exc).__name__}: {first[:80]}"
        before: list[float] = []
        after: dict[str, list[float]] = {name: [] for name, v in variants.items() if isinstance(v, BareLoop)}
        for _ in range(ROUNDS):
            before.append(VARIANT_STEPS / baseline.time(VARIANT_STEPS))
            for name, rates in after.items():
                rates.append(VARIANT_STEPS / variants[name].time(VARIANT_STEPS))  # type: ignore[union-attr]
        base = max(before)
        rows = []
        for name, loop in variants.items():
            if isinstance(loop, str):
                rows.append([name, f"{base:.1f}", "-", "-", loop])
                continue
            best = max(after[name])
            note = f"compile (first step) {loop.compile_s:.1f} s" if name.startswith("torch.compile") else ""
            rows.append([name, f"{base:.1f}", f"{best:.1f}", f"{best / base:.2f}x", note])
        if set_malloc_no_trim():  # process-wide and one-way: measured last, after the interleaved rounds
            malloc = max(VARIANT_STEPS / baseline.time(VARIANT_STEPS) for _ in range(ROUNDS))
            rows.append(["glibc mallopt: no trim, mmap >= 32 MB", f"{base:.1f}", f"{malloc:.1f}", f"{malloc / base:.2f}x",
                         "process-wide; timed after the rounds, not interleaved"])  # fmt: skip
        rows.append(["torch.inference_mode", "-", "-", "-", "not applicable: training needs autograd"])
        rows.append(["zero_grad(set_to_none=True)", "-", "-", "-", "already used by trainer and bare loop"])
        print(f"speed-ups of the bare step (steps/s, {VARIANT_STEPS} steps after {WARMUP_STEPS} warm-up, best of {ROUNDS}; "
              f"before = the bare loop as above, {torch.get_num_threads()} threads)")  # fmt: skip
        print(table(rows, ["candidate", "before", "after", "after/before", "note"]))


if __name__ == "__main__":
    main()
