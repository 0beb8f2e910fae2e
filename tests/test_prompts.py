import math

import pytest
import torch
from hypothesis import given, strategies as st

from artgen.errors import UsageError
from artgen.prompts import Prompt, parse_prompt, parse_prompts, prompt_loss, spherical_distance


@pytest.mark.parametrize("text, expected", [
    ("a red circle", Prompt("a red circle", 1.0, -math.inf)),
    ("a red circle:2", Prompt("a red circle", 2.0, -math.inf)),
    ("a red circle:-0.5:0.8", Prompt("a red circle", -0.5, 0.8)),
    ("photo: a cat", Prompt("photo: a cat", 1.0, -math.inf)),
    ("photo: a cat:3", Prompt("photo: a cat", 3.0, -math.inf)),
    ("http://x.org/a.png:1e-1", Prompt("http://x.org/a.png", 0.1, -math.inf)),
])
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


def test_parse_prompts_splits_on_pipe_and_keeps_order():
    prompts = parse_prompts(["sky:1|sea:-1", "sun"])
    assert [(p.text, p.weight) for p in prompts] == [("sky", 1.0), ("sea", -1.0), ("sun", 1.0)]


@pytest.mark.parametrize("bad", [":2", "", "   ", "cat:1.2.3", "cat:", "a||b", "cat:inf".replace("inf", "1e999")])
def test_malformed_prompts_raise_usage_error(bad):
    with pytest.raises(UsageError, match="prompt"):
        parse_prompts([bad])


@given(st.text())
def test_any_string_parses_or_raises_usage_error(text):
    try:
        prompts = parse_prompts([text])
    except UsageError:
        return
    assert all(p.text and math.isfinite(p.weight) for p in prompts)


def test_spherical_distance_range():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = spherical_distance(a, b)[0]
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert d[1] == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)
    assert d[2] == pytest.approx(2 * (math.pi / 2) ** 2, rel=1e-5)


def test_negative_weight_pushes_away():
    target = torch.tensor([[1.0, 0.0]])
    x = torch.tensor([[0.6, 0.8]], requires_grad=True)
    prompt_loss(x, target, torch.tensor([-1.0]), torch.tensor([-math.inf])).backward()
    assert x.grad[0, 0] > 0  # gradient descent lowers x·target, moving away


def test_stop_ends_the_pull_but_keeps_the_value():
    target = torch.tensor([[1.0, 0.0]])
    x = torch.tensor([[0.8, 0.6]], requires_grad=True)
    dist = spherical_distance(x, target).item()
    loss = prompt_loss(x, target, torch.tensor([1.0]), torch.tensor([dist + 0.1]))
    loss.backward()
    assert loss.item() == pytest.approx(dist)
    assert torch.all(x.grad == 0)
    y = x.detach().clone().requires_grad_(True)
    prompt_loss(y, target, torch.tensor([1.0]), torch.tensor([dist - 0.1])).backward()
    assert y.grad.abs().sum() > 0
