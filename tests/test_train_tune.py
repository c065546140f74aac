"""The LoRA strength search of rf-train tune, on KL curves known in advance."""

import pytest

from rfsdk.errors import ConversionError
from rfsdk.train.tune import choose_strength, chosen


def test_bisection_finds_the_largest_strength_within_budget():
    tried = choose_strength(lambda s: 0.08 * s**2, 0.02, steps=5)
    assert [t.strength for t in tried] == [1.0, 0.5, 0.75, 0.625, 0.5625, 0.53125]
    assert chosen(tried, 0.02).strength == 0.5


def test_full_strength_within_budget_is_measured_once():
    tried = choose_strength(lambda s: 0.01 * s, 0.02)
    assert [t.strength for t in tried] == [1.0] and chosen(tried, 0.02).strength == 1.0


def test_a_budget_no_strength_meets_is_a_clear_error():
    with pytest.raises(ConversionError, match=r"over --max-kl 0\.001.*higher --benign-kl-weight"):
        choose_strength(lambda s: 0.5 + s, 0.001, steps=3)
