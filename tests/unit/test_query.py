"""The encoded-query builder keeps values as data."""

from __future__ import annotations

import pytest

from shared.servicenow.query import EncodedQuery, QueryValueError


def test_conditions_join_with_and_or_and_new_query() -> None:
    query = (
        EncodedQuery()
        .eq("active", True)
        .where("state", "IN", ["1", "2"])
        .or_where("priority", "<=", 2)
        .new_query()
        .where("short_description", "STARTSWITH", "Defender")
        .order_by("number", descending=True)
    )
    assert str(query) == "active=true^stateIN1,2^ORpriority<=2^NQshort_descriptionSTARTSWITHDefender^ORDERBYDESCnumber"


@pytest.mark.parametrize(
    ("value", "rendered"),
    [("a^b", "a^^b"), ("x^NQactive=true", "x^^NQactive=true"), ("^ORsys_id!=0", "^^ORsys_id!=0"), ("end^", "end^^")],
)
def test_caret_is_escaped(value: str, rendered: str) -> None:
    assert str(EncodedQuery().eq("correlation_id", value)) == f"correlation_id={rendered}"


@pytest.mark.parametrize("value", ["javascript:gs.getUserID()", "  JavaScript:1", "javascript:"])
def test_script_values_are_refused(value: str) -> None:
    with pytest.raises(QueryValueError, match="javascript:"):
        EncodedQuery().eq("caller_id", value)
    with pytest.raises(QueryValueError, match="javascript:"):
        EncodedQuery().in_("caller_id", ["ok", value])


def test_commas_inside_in_values_are_refused() -> None:
    with pytest.raises(QueryValueError, match="cannot contain ','"):
        EncodedQuery().in_("name", ["plc-1", "a,b"])


@pytest.mark.parametrize("field", ["Name", "name=x", "a^b", "", "1abc", "x y"])
def test_field_names_are_checked(field: str) -> None:
    with pytest.raises(QueryValueError, match="field name"):
        EncodedQuery().eq(field, "v")


def test_unary_list_and_misuse() -> None:
    assert str(EncodedQuery().where("close_code", "ISEMPTY")) == "close_codeISEMPTY"
    with pytest.raises(QueryValueError):
        EncodedQuery().where("close_code", "ISEMPTY", "x")
    with pytest.raises(QueryValueError):
        EncodedQuery().where("state", "IN", "1,2")
    with pytest.raises(QueryValueError):
        EncodedQuery().in_("state", [])
    with pytest.raises(QueryValueError):
        EncodedQuery().or_where("state", "=", "1")
    with pytest.raises(QueryValueError):
        EncodedQuery().where("state", "CONTAINS", "1")
    with pytest.raises(QueryValueError):
        str(EncodedQuery().eq("a", 1).new_query())


def test_builder_is_immutable() -> None:
    base = EncodedQuery().eq("active", True)
    base.eq("state", 1)
    assert str(base) == "active=true"
