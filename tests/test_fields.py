"""stn_tf.fields: a config field declared once (type, default, help, accepted
values) makes its command-line flag and the config's check of its value."""

import dataclasses

import pytest
from absl import flags

from stn_tf import fields


@dataclasses.dataclass(frozen=True)
class Toy:
    name: str = fields.field("a", "A name.", choices=("a", "b"))
    count: int = fields.field(3, "A count.", lower_bound=1)
    rate: float = fields.field(0.5, "A rate.", lower_bound=0.0, upper_bound=1.0)
    size: int | None = fields.field(None, "A size.", lower_bound=1)
    on: bool = fields.field(False, "A switch.")
    steps: tuple[int, ...] = fields.field((), "Steps.")
    path: str | None = fields.field(None, "A path.")
    version: int = fields.field(2, "A version.", choices=(1, 2))
    plain: int = 7  # not declared: no flag, no check


def _parsed(*argv, skip=()):
    values = flags.FlagValues()
    fields.define_flags(Toy, skip=skip, flag_values=values)
    values(["prog", *argv])
    return values


def test_each_declared_field_becomes_a_flag_with_its_default_and_help():
    values = _parsed()
    declared = [f.name for f in dataclasses.fields(Toy) if f.name != "plain"]
    assert sorted(values) == sorted(declared)
    for f in dataclasses.fields(Toy):
        if f.name in declared and f.name != "steps":
            assert values[f.name].default == f.default, f.name
        if f.name in declared:
            assert values[f.name].help.endswith(f.metadata["help"])  # enums: "<a|b>: "
    assert values["steps"].default is None  # unset: the config's default stands
    assert "count" not in _parsed(skip=("count",))


def test_only_some_fields_and_a_second_definition_keeps_the_first():
    values = flags.FlagValues()
    fields.define_flags(Toy, only=("count", "rate"), flag_values=values)
    assert sorted(values) == ["count", "rate"]
    values["count"].default = 9  # a tool's default, set before another module
    fields.define_flags(Toy, flag_values=values)  # imports and defines them all
    assert sorted(values) == sorted(
        f.name for f in dataclasses.fields(Toy) if f.name != "plain"
    )
    assert values["count"].default == 9 and "name" in values
    with pytest.raises(ValueError, match=r"Toy declares no field \['counts'\]"):
        fields.define_flags(Toy, only=("counts",), flag_values=values)


def test_flags_parse_to_the_fields_types_and_given_reports_only_those_given():
    values = _parsed(
        "--count=5", "--rate=0.25", "--on", "--steps=3,6", "--name=b", "--size=4"
    )
    assert fields.given(Toy, values) == {
        "count": 5,
        "rate": 0.25,
        "on": True,
        "steps": (3, 6),
        "name": "b",
        "size": 4,
    }
    assert fields.given(Toy, _parsed()) == {}
    assert Toy(**fields.given(Toy, values)).steps == (3, 6)
    with pytest.raises(ValueError, match=r"--steps takes comma-separated int.*3,x"):
        fields.given(Toy, _parsed("--steps=3,x"))


@pytest.mark.parametrize(
    "argv",
    ["--name=c", "--count=0", "--rate=1.5", "--rate=-0.1", "--size=0", "--version=3"],
)
def test_flags_refuse_what_the_declaration_refuses(argv):
    with pytest.raises(flags.IllegalFlagValueError):
        _parsed(argv)


@pytest.mark.parametrize(
    "values,message",
    [
        (dict(name="c"), r"name must be one of \('a', 'b'\). Received: name='c'"),
        (dict(count=0), r"count must be >= 1: A count\. Received: count=0"),
        (
            dict(rate=1.5),
            r"rate must be >= 0.0 and <= 1.0: A rate\. Received: rate=1.5",
        ),
        (dict(size=0), r"size must be >= 1"),
        (dict(version=3), r"version must be one of \(1, 2\)"),
    ],
)
def test_check_refuses_a_value_outside_the_declaration(values, message):
    with pytest.raises(ValueError, match=message):
        fields.check(Toy(**values))


def test_check_takes_none_where_none_is_the_default_and_ignores_undeclared():
    fields.check(Toy(size=None, path=None, plain=-1))
    with pytest.raises(ValueError, match=r"count must be >= 1.*count=None"):
        fields.check(Toy(count=None))


def test_same_as_declares_a_field_again_with_its_default_help_and_choices():
    @dataclasses.dataclass(frozen=True)
    class Other:
        name: str = fields.same_as(Toy, "name")

    (field,) = dataclasses.fields(Other)
    assert field.default == "a" and field.metadata["choices"] == ("a", "b")
    with pytest.raises(ValueError, match="name must be one of"):
        fields.check(Other(name="z"))
