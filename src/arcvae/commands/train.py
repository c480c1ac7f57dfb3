"""``arcvae train``: its options are the fields of :class:`~arcvae.config.TrainConfig`, plus ``--resume``.

The command's signature is built from the declarations in ``config.py``, so
an option's name, type, default, range and help live there alone.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import Option, TrainConfig, command_line_options, flag_of
from ._common import user_errors

RESUME_HELP = "Continue the run in this folder from its last checkpoint; its saved options apply (only --device may be given too)."


@user_errors
def train_command(ctx: typer.Context, resume: Path | None, **given: Any) -> None:
    """Train the Beta-VAE with focal loss and class weights from the full training split."""
    from ..trainer import train

    if resume is not None:
        changed = [
            p.opts[0]
            for p in ctx.command.params
            if p.name not in ("resume", "device") and _on_command_line(ctx, p.name)
        ]
        if changed:
            raise typer.BadParameter(
                f"it continues a run with its saved options; these cannot be changed: {', '.join(changed)}",
                param_hint="--resume",
            )
        train(TrainConfig(), resume=resume, device=given["device"] if _on_command_line(ctx, "device") else None)
        return
    config = TrainConfig(**_config_values(given))
    if config.wandb:
        from ..tracking import require_wandb

        require_wandb()  # before any work
    if config.use_class_weights:
        import classweights

        classweights.check_method(config.weights_method, {})  # fail before loading data
    train(config)


def _config_values(given: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainConfig`` fields from the command's parameters: paths as strings, a ``--no-...`` flag turned over."""
    values = {}
    for spec, declaration, _ in command_line_options():
        value = given[_parameter_name(spec.name, declaration)]
        if declaration.flag is not None:
            value = not value
        elif declaration.path and value is not None:
            value = str(value)
        values[spec.name] = value
    return values


def _parameter_name(name: str, declaration: Option) -> str:
    """The Python name of the field's parameter: the field's, or its flag's (``no_class_weights``)."""
    return flag_of(name, declaration).removeprefix("--").replace("-", "_")


def _parameter(name: str, declaration: Option, kind: Any, default: Any) -> inspect.Parameter:
    """The Typer parameter of one ``TrainConfig`` field."""
    settings: dict[str, Any] = {"help": declaration.help.replace("[", "\\[")}  # Typer reads help as Rich markup
    if kind is bool:  # a flag alone: --overfit-batch (no --no-overfit-batch), --no-class-weights
        flag = typer.Option(flag_of(name, declaration), **settings)
        return _keyword(_parameter_name(name, declaration), Annotated[bool, flag], False)
    if declaration.path:
        kind, settings["show_default"] = Path | None, False
    if declaration.low is not None:
        settings["min"] = declaration.low
    if declaration.high is not None:
        settings["max"] = declaration.high
    return _keyword(name, Annotated[kind, typer.Option(**settings)], default)


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _signature() -> inspect.Signature:
    """``ctx``, then the options in the order of ``TrainConfig`` (``--resume`` right after ``--out``)."""
    resume = Annotated[Path | None, typer.Option(help=RESUME_HELP, show_default=False)]
    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for spec, declaration, kind in command_line_options():
        parameters.append(_parameter(spec.name, declaration, kind, spec.default))
        if spec.name == "out":
            parameters.append(_keyword("resume", resume, None))
    return inspect.Signature(parameters, return_annotation=None)


def _on_command_line(ctx: typer.Context, name: str | None) -> bool:
    source = None if name is None else ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # by name: Typer may bundle its own click


# Typer reads the options from the signature (and the annotations beside it).
train_command.__signature__ = _signature()  # type: ignore[attr-defined]
train_command.__annotations__ = {p.name: p.annotation for p in train_command.__signature__.parameters.values()}  # type: ignore[attr-defined]
