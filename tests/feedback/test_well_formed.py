"""The msgspec fast path of the field checks never answers differently from the general ones.

well_formed_candidates may decline a submission (None: the general checks then run), but
whatever it accepts must be exactly what check_event makes of it, value for value and type
for type (compared by repr: 1 and 1.0 differ there).
"""

import functools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from feedback.models import FeedbackKind
from feedback.services.event_checks import Window, field_checks
from feedback.services.parsing import decode_events
from feedback.services.well_formed import _all_canonical, well_formed_candidates
from registry.models import TrafficAllocation
from tests.factories.feedback import event

NOW = datetime.now(UTC)
WINDOW = Window(oldest=NOW - timedelta(days=30), newest=NOW + timedelta(minutes=5), days=30)
MISSING = object()


def general(raw: bytes, default_app: str):
    return field_checks(decode_events(raw, "json"), WINDOW, default_app)


def assert_same_answer(raw: bytes, default_app: str) -> bool:
    """Assert the fast path declines or agrees; return whether it took the submission."""
    fast = well_formed_candidates(raw, WINDOW, default_app)
    if fast is None:
        return False
    reference = general(raw, default_app)
    assert reference.errors == []
    assert [repr(c) for c in fast] == [repr(c) for c in reference.candidates]
    return True


def _at(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # JSON's integers, for orjson


def TEXT(**kwargs):  # noqa: N802 (reads as a strategy)
    return st.text(st.characters(blacklist_categories=("Cs",)), **kwargs)  # no lone surrogates


def _naive(delta: timedelta) -> str:
    return (NOW + delta).replace(tzinfo=None).isoformat()


def _zulu(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def _elsewhere(delta: timedelta) -> str:
    return (NOW + delta).astimezone(timezone(timedelta(hours=-7))).isoformat()


DEEP = functools.reduce(lambda inner, _: [inner], range(300), [])  # deeper than orjson writes
PAST = st.timedeltas(min_value=-timedelta(days=29), max_value=timedelta(0))
NONE = st.sampled_from([MISSING, None])

# Per field, values check_event rejects or that are otherwise awkward (MISSING: left out)
AWKWARD = {
    "event_id": ["not-a-uuid", "", 12, None, MISSING, "00000000-0000-4000-8000-00000000000G",
                 "00000000000040008000000000000001", "00000000-0000-4000-8000-000000000001\n",
                 "0000000A-0000-4000-8000-000000000001", "0000000-00000-4000-8000-000000000001",
                 "00000000-0000-4000-8000-0000000000-1", "00000000-0000-4000-8000-00000000 001",
                 "00000000-0000-4000-8000-0000000000é1", "{00000000-0000-4000-8000-0000000001}"],
    "occurred_at": [_at(-timedelta(days=30, seconds=1)), _at(-timedelta(days=40)),
                    _at(timedelta(minutes=6)), _naive(timedelta(days=1)), "20261127T100000Z",
                    "yesterday", "", 1764237600, None, MISSING],
    "application": ["", "x" * 65, "é" * 65, 5, ["shop"], None, MISSING],
    "kind": ["purchase", ["click"], 3, None, "", "Click", MISSING, "label", "prediction"],
    "role": ["champion", {}, 1, "", "Canary"],
    "request_id": ["r" * 129, 5, ["r1"], "", None],
    "segment": ["s" * 65, ["web"], 1.5],
    "value": [True, False, "high", "1.5", [1], "inf"],
    "payload": [[1], "x", 3, {"blob": "x" * 4086}, {"deep": DEEP}],
    "model_version": ["ranker:0", "ranker", ":1", "ranker:01", {"model": "m", "version": "2"},
                      {"model": "", "version": 1}, 5, ["m", 1], True],
    "prediction": [None, MISSING, DEEP],
    "label": [None, MISSING, DEEP],
}  # fmt: skip

# Per field, values check_event accepts (with the rest of a well-formed event)
GOOD = {
    "event_id": st.uuids().map(str),
    "occurred_at": st.one_of(
        PAST.map(_at), PAST.map(_naive), PAST.map(_zulu), PAST.map(_elsewhere)
    ),
    "application": st.sampled_from(["shop", "x" * 64, "é" * 64]) | NONE,
    "kind": st.sampled_from(FeedbackKind.values),
    "role": st.sampled_from(TrafficAllocation.Role.values) | NONE,
    "request_id": st.sampled_from(["", "r1", "r" * 128]) | NONE,
    "segment": st.sampled_from(["", "web", "s" * 64]) | NONE,
    "value": st.floats(allow_nan=False, allow_infinity=False) | INT64 | NONE,
    "payload": st.sampled_from([{}, {"a": 1, "b": [1.5, "x"]}, {"blob": "x" * 4085}]) | NONE,
    "model_version": st.sampled_from(["ranker:1", {"model": "m", "version": 2}, "a:b:3"]) | NONE,
    "prediction": st.sampled_from([1, 1.0, "1", True, [1], {"a": None}]) | NONE,
    "label": st.sampled_from([1, 1.0, "1", False, [1], {"a": None}]) | NONE,
    "unknown_field": st.sampled_from([1, "x", None, MISSING]),
}


@st.composite
def events(draw):
    """Well-formed events but for at most two awkward fields: one odd field among
    well-formed ones is where a fast path would go wrong."""
    odd = draw(st.sets(st.sampled_from(sorted(AWKWARD)), max_size=2))
    out = {}
    for name, good in GOOD.items():
        value = draw(st.sampled_from(AWKWARD[name]) if name in odd else good)
        if value is not MISSING:
            out[name] = value
    if "kind" not in odd:  # a label carries its label, a prediction its prediction and request
        if out["kind"] == "label" and "label" not in odd:
            out["label"] = draw(st.sampled_from([1, "cat", False]))
        if out["kind"] == "prediction" and not odd & {"prediction", "request_id"}:
            out["prediction"] = draw(st.sampled_from([1, "cat", [0.5]]))
            out["request_id"] = "r1"
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(events(), min_size=1, max_size=4),
    default_app=st.sampled_from(["", "shop"]),
)
def test_generated_submissions_get_the_same_answer(batch, default_app):
    raw = json.dumps(batch).encode()
    try:
        orjson.loads(raw)  # what the web's envelope check lets through
    except orjson.JSONDecodeError:
        assume(False)

    assert_same_answer(raw, default_app)


@settings(max_examples=100, deadline=None)
@given(
    batch=st.lists(
        st.fixed_dictionaries(
            {
                "event_id": st.uuids().map(str),
                "occurred_at": st.timedeltas(
                    min_value=-timedelta(days=29), max_value=timedelta(0)
                ).map(_at),
                "application": st.just("shop"),
                "kind": st.sampled_from(["impression", "click", "conversion"]),
            },
            optional={
                "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-9, 9),
                "request_id": TEXT(max_size=128),
                "segment": TEXT(max_size=64),
                "payload": st.dictionaries(TEXT(max_size=5), INT64 | TEXT()),
                "prediction": INT64 | TEXT() | st.none(),
            },
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_generated_submissions_take_the_fast_path(batch):
    raw = orjson.dumps(batch)

    assert assert_same_answer(raw, "")


AN_HOUR_AGO = _at(-timedelta(hours=1)).encode()


@pytest.mark.parametrize(
    ("raw", "fast"),
    [
        # a repeated key: the last one counts, for orjson and msgspec alike...
        (b'[{"event_id": "00000000-0000-4000-8000-000000000001", "kind": "impression",'
         b' "kind": "click", "occurred_at": "%s", "application": "shop"}]', True),
        # ...but msgspec refuses a bad value as it reads it: the general checks decide
        (b'[{"event_id": "00000000-0000-4000-8000-000000000001", "kind": "purchase",'
         b' "kind": "click", "occurred_at": "%s", "application": "shop"}]', False),
        # escaped key and value
        (b'[{"event\\u005fid": "00000000-0000-4000-8000-000000000002", "kind": "cl\\u0069ck",'
         b' "occurred_at": "%s", "application": "shop"}]', True),
        # an explicit null application with no default: the general checks decide
        (b'[{"event_id": "00000000-0000-4000-8000-000000000003", "kind": "click",'
         b' "occurred_at": "%s", "application": null}]', False),
        # one event, not a list
        (b'{"event_id": "00000000-0000-4000-8000-000000000004", "kind": "click",'
         b' "occurred_at": "%s", "application": "shop"}', False),
        (b"[]", True),
        # beyond a float's range: msgspec refuses it (the general path rejects the event)
        (b'[{"event_id": "00000000-0000-4000-8000-000000000005", "kind": "click",'
         b' "occurred_at": "%s", "application": "shop", "value": 1e999}]', False),
    ],
)  # fmt: skip
def test_awkward_submissions_get_the_same_answer(raw, fast):
    raw = raw.replace(b"%s", AN_HOUR_AGO)

    assert assert_same_answer(raw, "") is fast


def test_a_payload_nested_deeper_than_msgspec_goes_gets_the_same_answer():
    well_formed = orjson.dumps(event("shop", payload={"a": "here"}))
    raw = b"[" + well_formed.replace(b'"here"', b"[" * 1000 + b"]" * 1000) + b"]"
    orjson.loads(raw)  # within orjson's limit (1024), so the web's envelope check takes it

    assert not assert_same_answer(raw, "")


def test_the_common_submission_takes_the_fast_path():
    batch = [event("shop", kind, value=1.5, request_id="r", segment="web") for kind in
             ("impression", "click", "conversion")]  # fmt: skip

    assert assert_same_answer(orjson.dumps(batch), "")


def test_one_bad_event_sends_the_whole_submission_to_the_general_checks():
    batch = [event("shop"), event("shop", kind="purchase")]

    assert well_formed_candidates(orjson.dumps(batch), WINDOW, "") is None


CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# 36-character ids: one character of a canonical id changed, to one that often breaks it
ID_36 = st.tuples(st.uuids().map(str), st.integers(0, 35), st.sampled_from("-aF0 g\né")).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
) | st.uuids().map(str)


@settings(max_examples=500, deadline=None)
@given(ids=st.lists(ID_36, min_size=1, max_size=5))
def test_the_id_check_at_once_agrees_with_the_regex_on_each(ids):
    assert _all_canonical(ids) is all(CANONICAL.fullmatch(i) for i in ids)


WELL_FORMED = {"application": "shop", "kind": "label", "label": 1, "request_id": "r1"}


@pytest.mark.parametrize("default_app", ["", "shop"])
@pytest.mark.parametrize(
    ("field", "value"), [(field, value) for field, values in AWKWARD.items() for value in values]
)
def test_every_awkward_field_gets_the_same_answer(field, value, default_app):
    _assert_same_answer_for_one_odd_event({field: value}, default_app)


@pytest.mark.parametrize("default_app", ["", "shop"])
@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "prediction", "prediction": 1, "request_id": ""},
        {"kind": "prediction", "prediction": 1, "request_id": MISSING},
        {"kind": "prediction", "prediction": None, "request_id": "r1"},
        {"kind": "prediction", "prediction": [0.2, 0.8], "request_id": "r1"},
        {"kind": "label", "label": None, "prediction": 1},
        {"kind": "label", "label": "cat", "prediction": "cat", "role": "canary"},
    ],
)
def test_the_rules_across_fields_get_the_same_answer(fields, default_app):
    _assert_same_answer_for_one_odd_event(fields, default_app)


def _assert_same_answer_for_one_odd_event(fields: dict, default_app: str) -> None:
    odd = {"event_id": str(uuid.uuid4()), "occurred_at": _at(-timedelta(hours=1)),
           **WELL_FORMED, **fields}  # fmt: skip
    odd = {name: value for name, value in odd.items() if value is not MISSING}

    assert_same_answer(json.dumps([event("shop"), odd]).encode(), default_app)
