"""Keyframe schedules and keyed prompts: parsing, interpolation, and errors that point at the mistake."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artgen.errors import UsageError
from artgen.schedules import parse_prompt_keyframes, parse_schedule


def test_linear_and_step_interpolation():
    schedule = parse_schedule("0:(1.0), 50:(1.05), 100:(1.0)", "zoom")
    assert schedule.keys == ((0, 1.0), (50, 1.05), (100, 1.0))
    assert schedule.at(0) == 1.0
    assert schedule.at(25) == pytest.approx(1.025)
    assert schedule.at(75) == pytest.approx(1.025)
    assert schedule.at(500) == 1.0
    assert schedule.at(25, "step") == 1.0 and schedule.at(50, "step") == 1.05 and schedule.at(99, "step") == 1.05


def test_bare_number_is_a_constant_and_first_value_holds_before_first_key():
    assert parse_schedule("2.5", "angle").at(40) == 2.5
    assert parse_schedule("10:(3), 20:(5)", "angle").at(0) == 3


@pytest.mark.parametrize("text, message", [
    ("0:(1.0), 50:(1.05", "position 9"),
    ("0:(1.0) 50:(2)", "position 0"),
    ("0:(abc)", "'abc' is not a number"),
    ("0:(1), ", "missing after the last comma"),
    ("50:(1), 10:(2)", "key frame 10 .* is not after key frame 50"),
    ("0:(1), 0:(2)", "is not after"),
    ("0:(inf)", "finite"),
    ("", "position 0"),
    ("-3:(1)", "position 0"),
])
def test_syntax_errors_name_the_position(text, message):
    with pytest.raises(UsageError, match=message):
        parse_schedule(text, "zoom")


def test_keys_beyond_the_frame_count_are_refused():
    schedule = parse_schedule("0:(1), 10:(2)", "zoom")
    schedule.check_frames(11, "zoom")
    with pytest.raises(UsageError, match="key frame 10 is beyond the last frame \\(9\\)"):
        schedule.check_frames(10, "zoom")


keys = st.lists(st.tuples(st.integers(0, 500), st.floats(-1e3, 1e3, allow_nan=False)), min_size=1, max_size=6,
                unique_by=lambda key: key[0]).map(sorted)


@given(keys)
def test_written_schedules_parse_back_and_interpolate_between_neighbours(pairs):
    text = ", ".join(f"{frame}:({value!r})" for frame, value in pairs)
    schedule = parse_schedule(text, "zoom")
    assert schedule.keys == tuple(pairs)
    for frame, value in pairs:
        assert schedule.at(frame) == value
    for (f0, v0), (f1, v1) in zip(pairs, pairs[1:]):
        middle = schedule.at((f0 + f1) // 2)
        assert min(v0, v1) - 1e-9 <= middle <= max(v0, v1) + 1e-9


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_the_usage_error(text):
    try:
        schedule = parse_schedule(text, "zoom")
    except UsageError:
        return
    assert all(math.isfinite(value) for _, value in schedule.keys)


def test_prompt_keyframes_blend_over_the_transition():
    keyed = parse_prompt_keyframes("0:a forest at dawn|10:a city at night:2", transition=3)
    assert [p.text for _, p in keyed.keys] == ["a forest at dawn", "a city at night"]
    assert keyed.weights(0) == [1.0, 0.0] and keyed.weights(9) == [1.0, 0.0]
    assert keyed.weights(10) == pytest.approx([0.75, 0.5])   # a quarter of the way, the new one weighs 2
    assert keyed.weights(12) == pytest.approx([0.25, 1.5])
    assert keyed.weights(13) == [0.0, 2.0] and keyed.weights(99) == [0.0, 2.0]
    assert parse_prompt_keyframes("0:a|5:b").weights(5) == [0.0, 1.0]


@pytest.mark.parametrize("text, message", [
    ("a forest|10:a city", "expected 'FRAME:prompt' at position 0"),
    ("5:a forest", "first key must be frame 0"),
    ("0:a|9:b|4:c", "key frame 4 .* is not after key frame 9"),
    ("0:a|10:", "has no text"),
])
def test_bad_prompt_keyframes(text, message):
    with pytest.raises(UsageError, match=message):
        parse_prompt_keyframes(text)


@given(st.text(max_size=40))
def test_any_prompt_keyframe_text_parses_or_raises_the_usage_error(text):
    try:
        parse_prompt_keyframes(text)
    except UsageError:
        pass
