"""Param: the schema coerces what code passes (validate) and what a person types into a form (parse)."""
import re

import pytest

from selection.params import Param, validate_params

BETA = Param("beta", "float", 1.0, "temperature", min=0.0, max=10.0)
K = Param("k", "int", 3, "count", min=1, nullable=True)
MODE = Param("mode", "str", "power", "how", choices=("power", "softmax"))
NOTE = Param("note", "str", "x", "free text")
FLAG = Param("flag", "bool", True, "switch")


@pytest.mark.parametrize("param, typed, want", [
    (BETA, "2.5", 2.5), (BETA, "0", 0.0), (K, "7", 7), (K, "", None), (K, None, None),
    (MODE, "softmax", "softmax"), (NOTE, "", ""), (FLAG, "", False), (FLAG, "on", True), (FLAG, True, True),
])
def test_parse_turns_typed_text_into_the_parameters_type(param, typed, want):
    got = param.parse(typed)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("param, typed, message", [
    (BETA, "", "'beta' may not be empty (range [0, 10]; default 1.0)"),
    (BETA, "11", "above the maximum 10"),
    (BETA, "nan", "not a valid float"),
    (K, "2.5", "not a valid int"),
    (MODE, "", "not one of ['power', 'softmax']"),
])
def test_parse_refuses_what_the_schema_refuses_and_says_why(param, typed, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        param.parse(typed)


def test_a_parsed_value_passes_validation_unchanged():
    for p, typed in [(BETA, "3"), (K, "4"), (MODE, "power"), (NOTE, "hi"), (FLAG, "off")]:
        v = p.parse(typed)
        assert p.validate(v) == v
        assert validate_params((p,), {p.name: v}) == {p.name: v}
