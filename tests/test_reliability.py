"""Every bad input of tools.reliability.CASES (the table docs/reliability.md shows)
gets the answer its case expects: the exception, with what was received."""

import pytest

from tools import reliability


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return reliability.Inputs(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize(
    "case", reliability.CASES, ids=[f"{c.where}: {c.what}" for c in reliability.CASES]
)
def test_a_bad_input_gets_the_answer_of_its_case(case, inputs):
    answer = reliability.outcome(case, inputs)
    assert reliability.matches(case, answer), f"expected /{case.expect}/, got {answer}"


def test_every_entry_point_has_its_cases():
    where = {c.where for c in reliability.CASES}
    assert {
        "sampler.sample",
        "SpatialTransformer",
        "models.build_model",
        "mnist.load_mnist",
        "datasets.Pipeline",
        "python -m stn_tf.train",
        "export_saved_model",
        "tflite.convert",
        "signature serving_default",
        "signature serving_uint8",
    } <= where
    assert len({(c.where, c.what) for c in reliability.CASES}) == len(reliability.CASES)


def test_an_answer_that_does_not_match_is_caught(inputs):
    case = reliability.Case("x", "y", lambda i: 1 / 0, r"^`ValueError`")
    answer = reliability.outcome(case, inputs)
    assert answer == "`ZeroDivisionError`: division by zero"
    assert not reliability.matches(case, answer)
