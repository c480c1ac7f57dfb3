"""Tests of arcvae.config: every option declared once, and what is derived from the declarations."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arcvae.cli import app
from arcvae.config import (
    BetaScheduleName,
    DeviceName,
    TargetMetric,
    TrainConfig,
    WeightsFrom,
    choices,
    command_line_options,
    flag_of,
)
from arcvae.errors import ArcvaeError

CLI_DOCS = Path(__file__).parents[1] / "docs" / "cli.md"


def train_options_table() -> dict[str, str]:
    """The options table of ``arcvae train`` in docs/cli.md: ``--flag`` -> its Default cell."""
    text = CLI_DOCS.read_text(encoding="utf-8")
    section = text[text.index("## `arcvae train`") :]
    section = section[section.index("### Options") : section.index("Settings without an option")]
    rows = re.findall(r"^\| `(--[a-z-]+)[^`]*` \|([^|]*)\|", section, flags=re.MULTILINE)
    return {flag: default.strip() for flag, default in rows}


def test_every_option_is_a_field_and_documented_with_its_default():
    table = train_options_table()
    declared = {flag_of(spec.name, declaration): (spec, declaration) for spec, declaration, _ in command_line_options()}
    assert set(table) == set(declared) | {"--resume"}
    for name, (spec, declaration) in declared.items():
        if declaration.path:
            continue  # a path's default is a description ("the default corpus", `runs/<time>`)
        shown = "off" if isinstance(spec.default, bool) else f"`{spec.default}`"
        assert table[name] == shown, name


def test_the_command_offers_exactly_the_declared_options():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    offered = set(re.findall(r"(--[a-z][a-z-]+)", result.stdout)) - {"--help", "--target-accuracy", "--beta-max"}
    declared = {flag_of(spec.name, declaration) for spec, declaration, _ in command_line_options()} | {"--resume"}
    assert declared - {"--target-accuracy", "--beta-max"} == offered  # those two are also named inside help texts


def test_choice_types_are_the_command_lines_choices():
    assert choices(BetaScheduleName) == ("linear_warmup", "cyclical", "constant")
    assert choices(DeviceName) == ("auto", "cpu", "cuda", "mps")
    assert choices(WeightsFrom) == ("full", "batch")
    assert choices(TargetMetric) == ("pixel", "foreground", "balanced", "perfect")
    result = CliRunner().invoke(app, ["train", "--device", "gpu"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda', 'mps'" in result.output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "Expected epochs to be a positive integer, but got 0"),
        ({"lr": 0.0}, "Expected lr to be a finite number > 0, but got 0.0"),
        ({"weights_smooth": -1.0}, "Expected weights_smooth to be a finite number >= 0, but got -1.0"),
        ({"target_accuracy": 1.5}, "Expected target_accuracy to be a finite number in (0, 1], but got 1.5"),
        ({"num_colors": 1}, "Expected num_colors to be an integer from 2 to 256, but got 1"),
        ({"seed": -1}, "Expected seed to be an integer from 0 to 2**63 - 1, but got -1"),
        ({"max_epochs": 0}, "Expected max_epochs to be a positive integer or None, but got 0"),
        ({"device": "gpu"}, "Expected device to be auto, cpu, cuda or mps, but got 'gpu'"),
        (
            {"beta_schedule": "sigmoid"},
            "Expected beta_schedule to be linear_warmup, cyclical or constant, but got 'sigmoid'",
        ),
        ({"quick_test": 1}, "Expected quick_test to be true or false, but got 1"),
        ({"data": 3}, "Expected data to be a path or None, but got 3"),
        ({"lr": float("nan")}, "Expected lr to be a finite number > 0, but got nan"),
        ({"epochs": True}, "Expected epochs to be a positive integer, but got True"),
    ],
)
def test_values_are_checked_against_their_declarations(values, message):
    with pytest.raises(ArcvaeError) as error:
        TrainConfig(**values)
    assert str(error.value) == message


def test_every_default_passes_its_own_check_and_round_trips():
    config = TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert [spec.name for spec in fields(TrainConfig)] == list(config.to_dict())


def test_runs_saved_before_weights_from_was_named_so_resume_with_their_choice():
    saved = {**TrainConfig(overfit_batch=True).to_dict(), "unknown_key": 1}
    saved["weights_source"] = saved.pop("weights_from")
    saved["weights_source"] = "batch"
    assert TrainConfig.from_dict(saved).weights_from == "batch"


def test_quick_test_and_max_epochs_shorten_the_run():
    assert TrainConfig(epochs=50).planned_epochs == 50
    assert TrainConfig(epochs=50, quick_test=True).planned_epochs == 3
    assert TrainConfig(epochs=50, max_epochs=7).epochs_to_run == 7
    assert TrainConfig(quick_test=True).steps_per_overfit_epoch == 10
    assert TrainConfig().steps_per_overfit_epoch == 50
    assert TrainConfig(overfit_batch=True, epochs=10).schedule_epochs == 50  # --epochs only limits an overfit run
    assert TrainConfig(epochs=10).schedule_epochs == 10
    assert TrainConfig(train_samples=100).sample_limits == (100, None)
    assert TrainConfig(train_samples=100, quick_test=True).sample_limits == (2048, 512)
    assert TrainConfig(weights_from="batch").per_batch_weights  # normal mode: every batch weighs itself
    assert not TrainConfig(weights_from="batch", overfit_batch=True).per_batch_weights
    assert not TrainConfig(weights_from="batch", use_class_weights=False).per_batch_weights
