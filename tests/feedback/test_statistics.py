import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from feedback import statistics as st


@pytest.mark.parametrize(("x", "n"), [(0, 50), (3, 10), (47, 120), (1000, 1000), (5, 100000)])
def test_wilson_interval_matches_statsmodels(x, n):
    lo, hi = proportion_confint(x, n, alpha=0.05, method="wilson")

    ours = st.wilson_interval(x, n)

    assert ours == pytest.approx((lo, hi), abs=1e-12)


def test_wilson_interval_of_empty_arm_is_none():
    assert st.wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(10, 100, 20, 100), (0, 400, 9, 380), (512, 10000, 470, 9800)]
)
def test_two_proportion_ztest_matches_statsmodels(x1, n1, x2, n2):
    z_ref, p_ref = proportions_ztest([x1, x2], [n1, n2])

    ours = st.two_proportion_ztest(x1, n1, x2, n2)

    assert ours.statistic == pytest.approx(z_ref, rel=1e-10)
    assert ours.p_value == pytest.approx(p_ref, rel=1e-9)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0, 100, 0, 100), (5, 0, 3, 10), (0, 0, 0, 0)])
def test_two_proportion_ztest_without_variance_or_sample_is_none(x1, n1, x2, n2):
    assert st.two_proportion_ztest(x1, n1, x2, n2) is None


def test_rate_difference_interval_is_unpooled_wald():
    x1, n1, x2, n2 = 50, 1000, 80, 1000
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = stats.norm.ppf(0.975)

    diff = st.rate_difference(x1, n1, x2, n2)

    assert diff.absolute == pytest.approx(0.03)
    assert diff.absolute_ci == pytest.approx((0.03 - z * se, 0.03 + z * se))
    assert diff.relative == pytest.approx(0.6)
    lo, hi = diff.relative_ci
    assert lo < 0.6 < hi


def test_rate_difference_with_zero_baseline_conversions_has_no_relative_lift():
    diff = st.rate_difference(0, 500, 4, 500)

    assert diff.absolute == pytest.approx(0.008)
    assert diff.relative is None
    assert diff.relative_ci is None


def test_welch_ttest_from_sums_matches_scipy():
    rng = np.random.default_rng(7)
    a, b = rng.normal(10, 2, 300), rng.normal(10.4, 3, 250)
    ref = stats.ttest_ind_from_stats(
        b.mean(), b.std(ddof=1), len(b), a.mean(), a.std(ddof=1), len(a), equal_var=False
    )
    base = st.moments(len(a), a.sum(), (a * a).sum())
    cand = st.moments(len(b), b.sum(), (b * b).sum())

    ours = st.welch_ttest(base, cand)

    assert base.variance == pytest.approx(a.var(ddof=1), rel=1e-9)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-8)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)


def test_moments_need_two_observations():
    assert st.moments(1, 5.0, 25.0) is None


def test_welch_ttest_with_constant_values_is_none():
    const = st.moments(10, 50.0, 250.0)

    assert st.welch_ttest(const, const) is None


def test_mean_difference_interval_contains_the_difference():
    base, cand = st.moments(100, 1000.0, 10400.0), st.moments(100, 1100.0, 12500.0)

    diff = st.mean_difference(base, cand)

    assert diff.absolute == pytest.approx(1.0)
    assert diff.absolute_ci[0] < 1.0 < diff.absolute_ci[1]
    assert diff.relative == pytest.approx(0.1)


def test_srm_matches_scipy_chisquare_and_flags_mismatch():
    observed, weights = [5000, 4600], [50, 50]
    ref = stats.chisquare(observed, f_exp=[4800, 4800])

    srm = st.sample_ratio_mismatch(observed, weights)

    assert srm.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert srm.statistic == pytest.approx(ref.statistic)
    assert srm.verdict == "mismatch"


def test_srm_uses_configured_weights():
    srm = st.sample_ratio_mismatch([9000, 1000], [90, 10])

    assert srm.verdict == "ok"
    assert srm.p_value == pytest.approx(1.0)


def test_srm_is_not_judged_below_eight_exposures_per_arm():
    srm = st.sample_ratio_mismatch([100, 7], [50, 50])

    assert srm.verdict == "not_enough_data"
    assert srm.p_value is None


def test_holm_adjust_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    raw = [0.01, 0.04, 0.03, 0.5]
    ref = multipletests(raw, method="holm")[1]

    assert st.holm_adjust(raw) == pytest.approx(list(ref))


def test_holm_adjust_keeps_missing_values_missing():
    assert st.holm_adjust([None, 0.02, 0.01]) == [None, pytest.approx(0.02), pytest.approx(0.02)]


def test_minimum_detectable_effect_matches_statsmodels_power():
    from statsmodels.stats.power import NormalIndPower

    p, n = 0.1, 5000
    mde = st.minimum_detectable_effect(p, n, n)
    # Cohen's h of the MDE against a pooled-variance normal approximation gives 80 % power
    effect_size = mde / math.sqrt(p * (1 - p))
    power = NormalIndPower().power(effect_size, nobs1=n, alpha=0.05, ratio=1.0)

    assert power == pytest.approx(0.8, abs=1e-6)


def test_exposures_needed_reaches_the_effect_at_that_sample():
    p, effect = 0.1, 0.01
    total = st.exposures_needed(p, effect, candidate_share=0.5)
    n = total / 2
    se = math.sqrt(p * (1 - p) / n + (p + effect) * (1 - p - effect) / n)

    assert effect / se == pytest.approx(stats.norm.ppf(0.975) + stats.norm.ppf(0.8), rel=1e-3)


def test_power_helpers_refuse_degenerate_inputs():
    assert st.minimum_detectable_effect(0.0, 100, 100) is None
    assert st.minimum_detectable_effect(0.1, 0, 100) is None
    assert st.exposures_needed(0.1, 0.0) is None
    assert st.exposures_needed(0.95, 0.1) is None


def test_always_valid_p_value_is_non_increasing_over_looks():
    looks = [(10, 100, 12, 100), (20, 200, 35, 200), (30, 300, 40, 300)]

    ps = [st.always_valid_p_value(looks[: k + 1]) for k in range(len(looks))]

    assert ps == sorted(ps, reverse=True)
    assert all(0 < p <= 1 for p in ps)


def test_always_valid_p_value_rejects_a_large_real_difference():
    looks = [(100 * k, 2000 * k, 160 * k, 2000 * k) for k in range(1, 11)]

    assert st.always_valid_p_value(looks) < 0.001


def test_always_valid_p_value_without_data_is_none():
    assert st.always_valid_p_value([(0, 0, 0, 0)]) is None


def test_peeking_safe_decision_keeps_false_positives_under_alpha_unlike_naive_ztest():
    # given A/A data (both arms convert at 10 %) looked at every hour for two days
    rng = np.random.default_rng(20261126)
    sims, hours, per_hour, alpha = 1000, 48, 200, 0.05
    xa = rng.binomial(per_hour, 0.1, (sims, hours)).cumsum(axis=1)
    xb = rng.binomial(per_hour, 0.1, (sims, hours)).cumsum(axis=1)
    naive_hits = safe_hits = 0

    # when each simulated rollout is checked after every hour
    for s in range(sims):
        looks = [
            (int(xa[s, k]), per_hour * (k + 1), int(xb[s, k]), per_hour * (k + 1))
            for k in range(hours)
        ]
        naive = [st.two_proportion_ztest(*look) for look in looks]
        naive_hits += any(r is not None and r.p_value < alpha for r in naive)
        safe_hits += st.always_valid_p_value(looks) < alpha

    # then stopping at the first naive "significant" look is wrong far more often than alpha,
    # while the always-valid p-value stays at or under it
    assert naive_hits / sims > 2 * alpha
    assert safe_hits / sims <= alpha
