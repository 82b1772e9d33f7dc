"""Config fields declared once: type, default, help and the values accepted.

A config dataclass (``runs.TrainConfig``, ``colocalise.CoLocConfig``) declares each
field with :func:`field`. Its command line is :func:`define_flags` of the class
(each flag's kind from the field's type, its default, help and bounds from the
declaration), and :func:`check` refuses a value the declaration does not accept,
from Python as from the command line. Adding a field adds its flag.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from absl import flags

__all__ = ["check", "define_flags", "field", "given", "same_as"]


def field(
    default,
    help: str,
    *,
    choices=None,
    lower_bound=None,
    upper_bound=None,
):
    """A dataclass field with its ``--help`` line and the values it accepts
    (``choices``, or ``lower_bound`` / ``upper_bound`` inclusive; ``None`` is
    accepted where the default is ``None``)."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "choices": None if choices is None else tuple(choices),
            "lower_bound": lower_bound,
            "upper_bound": upper_bound,
        },
    )


def _declared(config_or_cls):
    return [f for f in dataclasses.fields(config_or_cls) if "help" in f.metadata]


def check(config) -> None:
    """Raises ``ValueError`` naming the first field whose value its declaration
    does not accept, what it accepts, and what it received."""
    for f in _declared(config):
        value, accepts = getattr(config, f.name), f.metadata
        if value is None and f.default is None:
            continue
        if accepts["choices"] is not None:
            if value not in accepts["choices"]:
                raise ValueError(
                    f"{f.name} must be one of {accepts['choices']}. "
                    f"Received: {f.name}={value!r}"
                )
            continue
        lower, upper = accepts["lower_bound"], accepts["upper_bound"]
        if lower is None and upper is None:
            continue
        if value is None or (
            (lower is not None and value < lower)
            or (upper is not None and value > upper)
        ):
            bounds = [f">= {lower}"] * (lower is not None) + [f"<= {upper}"] * (
                upper is not None
            )
            raise ValueError(
                f"{f.name} must be {' and '.join(bounds)}: {accepts['help']} "
                f"Received: {f.name}={value!r}"
            )


def _strip_none(annotation):
    """``int`` of ``int | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def _kind(annotation) -> type:
    """``int`` of ``int | None``, ``tuple`` of ``tuple[int, ...]``."""
    annotation = _strip_none(annotation)
    return typing.get_origin(annotation) or annotation


def define_flags(
    cls,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    flag_values=flags.FLAGS,
) -> None:
    """Defines an absl flag for every declared field of ``cls`` (or those in
    ``only``) but ``skip``: a list for a tuple field (unset by default: the
    config's default stands), an enum for choices, else the field's type; bounds
    as declared. A flag already defined (by another module of the process, from
    the same declaration) is left as it is."""
    hints = typing.get_type_hints(cls)
    declared = {f.name for f in _declared(cls)}
    unknown = set(only or ()) - declared
    if unknown:
        raise ValueError(f"{cls.__name__} declares no field {sorted(unknown)}")
    for f in _declared(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        if f.name in flag_values:
            continue
        accepts, kind = f.metadata, _kind(hints[f.name])
        args = dict(name=f.name, default=f.default, help=accepts["help"])
        args["flag_values"] = flag_values
        bounds = {k: accepts[k] for k in ("lower_bound", "upper_bound")}
        bounds = {k: v for k, v in bounds.items() if v is not None}
        choices = accepts["choices"]
        if kind is tuple:
            flags.DEFINE_list(**{**args, "default": None})
        elif kind is str and choices is not None:
            flags.DEFINE_enum(**args, enum_values=list(choices))
        elif kind is str:
            flags.DEFINE_string(**args)
        elif kind is bool:
            flags.DEFINE_bool(**args)
        elif kind in (int, float):
            define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
            define(**args, **bounds)
            if choices is not None:
                flags.register_validator(
                    f.name,
                    lambda v, choices=choices: v is None or v in choices,
                    f"must be one of {choices}",
                    flag_values=flag_values,
                )
        else:
            raise TypeError(f"no flag for field {f.name}: {hints[f.name]}")


def given(cls, flag_values=flags.FLAGS) -> dict:
    """The fields of ``cls`` whose flags the command line gave, typed as the
    fields are (a list flag's strings as the tuple of the field's items)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in _declared(cls):
        if f.name not in flag_values or not flag_values[f.name].present:
            continue
        value = flag_values[f.name].value
        if _kind(hints[f.name]) is tuple:
            (item, _) = typing.get_args(_strip_none(hints[f.name]))
            try:
                value = tuple(item(v) for v in value or ())
            except ValueError:
                raise ValueError(
                    f"--{f.name} takes comma-separated {item.__name__} values. "
                    f"Received: {','.join(value)}"
                ) from None
        values[f.name] = value
    return values


def same_as(cls, name: str):
    """Field ``name`` of ``cls`` declared again in another config (its default,
    help and accepted values), so that the two cannot drift apart."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return dataclasses.field(default=f.default, metadata=f.metadata)
