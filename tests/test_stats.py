"""The study's statistics against closed forms and hand-worked examples: Student's t p-values (df 1 and 2 have
closed-form distributions), the paired t-test, and Holm's step-down adjustment."""

import math

import pytest

from dr_fdsl.stats import holm, paired_t_test, t975, t_two_sided_p


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 10.0, -4.0])
def test_t_p_value_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(t):
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)), abs=1e-12)  # Cauchy
    assert t_two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), abs=1e-12)


@pytest.mark.parametrize("df", [1, 3, 5, 9, 20, 30])
def test_the_tabled_95_percent_quantile_has_p_0_05(df):
    assert t_two_sided_p(t975(df), df) == pytest.approx(0.05, abs=1e-4)  # the table's 3 decimals


def test_paired_t_test_by_hand():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 3: 6.0}
    b = {0: 1.0, 1: 2.0, 2: 3.0, 3: 3.0, 9: 100.0}  # seed 9 is not paired: left out
    diffs = [2.0, 3.0, 1.0, 3.0]  # mean 2.25, sd 0.9574, t = 4.700 on 3 df
    t = 2.25 / (0.9574271077563381 / 2)
    assert paired_t_test(a, b) == pytest.approx(t_two_sided_p(t, 3), rel=1e-12)
    assert 0.01 < paired_t_test(a, b) < 0.02 and len(diffs) == 4  # t_{0.99,3} = 4.541 < 4.70 < t_{0.995,3} = 5.841
    assert paired_t_test({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}) == 1.0
    assert paired_t_test({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}) == 0.0
    assert math.isnan(paired_t_test({0: 1.0}, {0: 2.0}))


def test_holm_steps_down_and_keeps_order():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([math.nan, 0.02, 0.04])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.04])  # nan does not count
    assert holm([]) == []
