"""Pure statistics for rollout analysis: no database, no Django, plain numbers in and out.

Every function returns finite floats or None: a result that would be NaN or infinite (empty
arm, zero variance, tiny sample) comes back as None, which the analysis reports as
"not_enough_data" so the JSON never carries NaN.

Peeking-safe decision: we use the **mixture sequential probability ratio test (mSPRT)** of
Johari, Pekelis and Walsh ("Always valid inference", 2017) with a normal mixture over the
difference of the two rates. Its p-value is *always valid*: P(p_t <= alpha for some look t)
<= alpha under the null, however often one looks. We chose it over group-sequential alpha
spending because rollouts here are checked every hour for an open-ended time: alpha spending
needs the number and timing of looks (or the maximum sample) fixed in advance, while the
mSPRT needs neither and lets the beat job stop a rollout at any hour. The price is power: it
needs more data than a single fixed-horizon test to reach the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special, stats

ALPHA = 0.05
SRM_ALPHA = 0.001
SRM_MIN_PER_ARM = 8
# Prior scale of the true difference of rates in the mSPRT mixture (absolute, 2 percentage
# points): the test is most powerful for effects of about this size, valid for any.
MSPRT_TAU = 0.02


def _finite(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _z_quantile(q: float) -> float:
    return float(special.ndtri(q))


def _two_sided_p(z: float) -> float:
    return float(2.0 * special.ndtr(-abs(z)))


# --- Proportions ---


def wilson_interval(successes: int, n: int, *, alpha: float = ALPHA) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None for an empty sample."""
    if n <= 0:
        return None
    successes = min(max(successes, 0), n)
    z = _z_quantile(1 - alpha / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its two-sided p-value."""

    statistic: float
    p_value: float


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> TestResult | None:
    """Pooled two-proportion z-test of p2 - p1 = 0 (statistic sign follows x1/n1 - x2/n2).

    None when an arm is empty or the pooled rate is 0 or 1 (no variance to test against).
    """
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return None
    z = (x1 / n1 - x2 / n2) / math.sqrt(var)
    return TestResult(statistic=z, p_value=_two_sided_p(z))


@dataclass(frozen=True)
class Difference:
    """Candidate minus baseline, absolute and relative, with confidence intervals."""

    absolute: float
    absolute_ci: tuple[float, float]
    relative: float | None
    relative_ci: tuple[float, float] | None


def rate_difference(
    x_base: int, n_base: int, x_cand: int, n_cand: int, *, alpha: float = ALPHA
) -> Difference | None:
    """Wald interval of p_cand - p_base and delta-method (log ratio) interval of the lift."""
    if n_base <= 0 or n_cand <= 0:
        return None
    p1, p2 = x_base / n_base, x_cand / n_cand
    z = _z_quantile(1 - alpha / 2)
    se = math.sqrt(p1 * (1 - p1) / n_base + p2 * (1 - p2) / n_cand)
    diff = p2 - p1
    relative = relative_ci = None
    if x_base > 0 and x_cand > 0:
        relative = p2 / p1 - 1
        # Var(log p2/p1) = (1-p1)/x1 + (1-p2)/x2; the interval is asymmetric around the lift.
        se_log = math.sqrt((1 - p1) / x_base + (1 - p2) / x_cand)
        log_ratio = math.log(p2 / p1)
        relative_ci = (math.exp(log_ratio - z * se_log) - 1, math.exp(log_ratio + z * se_log) - 1)
    elif x_base > 0:
        relative = -1.0
    return Difference(diff, (diff - z * se, diff + z * se), relative, relative_ci)


# --- Continuous metrics ---


@dataclass(frozen=True)
class Moments:
    """Mean and sample variance of a metric rebuilt from count, sum and sum of squares."""

    n: int
    mean: float
    variance: float


def moments(count: int, total: float, total_sq: float) -> Moments | None:
    """None below two observations (no sample variance)."""
    if count < 2:
        return None
    mean = total / count
    # max(): rounding can push a zero variance a hair below zero
    variance = max(0.0, (total_sq - total * total / count) / (count - 1))
    return Moments(count, mean, variance)


def welch_ttest(base: Moments, cand: Moments) -> TestResult | None:
    """Welch's unequal-variance t-test of mean(cand) - mean(base) = 0."""
    if base.variance == 0 and cand.variance == 0:
        return None
    res = stats.ttest_ind_from_stats(
        cand.mean,
        math.sqrt(cand.variance),
        cand.n,
        base.mean,
        math.sqrt(base.variance),
        base.n,
        equal_var=False,
    )
    t, p = _finite(float(res.statistic)), _finite(float(res.pvalue))
    if t is None or p is None:
        return None
    return TestResult(statistic=t, p_value=p)


def mean_difference(base: Moments, cand: Moments, *, alpha: float = ALPHA) -> Difference | None:
    """Welch interval of mean(cand) - mean(base) with Welch-Satterthwaite degrees of freedom."""
    v1, v2 = base.variance / base.n, cand.variance / cand.n
    se = math.sqrt(v1 + v2)
    if se == 0:
        return None
    df = (v1 + v2) ** 2 / (v1 * v1 / (base.n - 1) + v2 * v2 / (cand.n - 1))
    t = float(stats.t.ppf(1 - alpha / 2, df))
    diff = cand.mean - base.mean
    relative = relative_ci = None
    if base.mean != 0:
        relative = diff / abs(base.mean)
        relative_ci = ((diff - t * se) / abs(base.mean), (diff + t * se) / abs(base.mean))
    return Difference(diff, (diff - t * se, diff + t * se), relative, relative_ci)


# --- Sample-ratio mismatch ---


@dataclass(frozen=True)
class SrmResult:
    """Chi-square test of observed exposures against the configured split."""

    verdict: str  # "ok" | "mismatch" | "not_enough_data"
    p_value: float | None
    statistic: float | None


def sample_ratio_mismatch(
    observed: Sequence[int], weights: Sequence[float], *, alpha: float = SRM_ALPHA
) -> SrmResult:
    """Flag SRM at p < alpha (0.001); judged only with >= 8 exposures in every arm."""
    if len(observed) != len(weights) or len(observed) < 2 or min(observed) < SRM_MIN_PER_ARM:
        return SrmResult("not_enough_data", None, None)
    if any(w <= 0 for w in weights):
        return SrmResult("not_enough_data", None, None)
    total, wsum = sum(observed), float(sum(weights))
    expected = [total * w / wsum for w in weights]
    res = stats.chisquare(observed, f_exp=expected)
    p = _finite(float(res.pvalue))
    if p is None:
        return SrmResult("not_enough_data", None, None)
    return SrmResult("mismatch" if p < alpha else "ok", p, float(res.statistic))


# --- Multiple testing ---


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are skipped, and stay None)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# --- Power ---


def minimum_detectable_effect(
    p_base: float, n_base: int, n_cand: int, *, alpha: float = ALPHA, power: float = 0.8
) -> float | None:
    """Smallest absolute rate difference a fixed-horizon test would detect at this sample."""
    if n_base <= 0 or n_cand <= 0 or not 0 < p_base < 1:
        return None
    z = _z_quantile(1 - alpha / 2) + _z_quantile(power)
    return z * math.sqrt(p_base * (1 - p_base) * (1 / n_base + 1 / n_cand))


def exposures_needed(
    p_base: float,
    effect: float,
    *,
    candidate_share: float = 0.5,
    alpha: float = ALPHA,
    power: float = 0.8,
) -> int | None:
    """Total exposures (both arms) to detect an absolute `effect` with this split."""
    p_cand = p_base + effect
    if effect == 0 or not 0 < p_base < 1 or not 0 < p_cand < 1 or not 0 < candidate_share < 1:
        return None
    z = _z_quantile(1 - alpha / 2) + _z_quantile(power)
    # n_total such that p1q1/(n(1-s)) + p2q2/(n s) = (effect/z)^2
    var_unit = p_base * (1 - p_base) / (1 - candidate_share) + p_cand * (1 - p_cand) / (
        candidate_share
    )
    return math.ceil(var_unit * z * z / (effect * effect))


# --- Peeking-safe sequential test ---


def msprt_likelihood_ratio(
    x_base: int, n_base: int, x_cand: int, n_cand: int, *, tau: float = MSPRT_TAU
) -> float | None:
    """Mixture likelihood ratio for H0: p_cand = p_base against a N(0, tau^2) mixture.

    The difference d has estimated variance v; with theta ~ N(0, tau^2),
    Lambda = sqrt(v / (v + tau^2)) * exp(d^2 tau^2 / (2 v (v + tau^2))).
    """
    if n_base <= 0 or n_cand <= 0:
        return None
    p1, p2 = x_base / n_base, x_cand / n_cand
    pooled = (x_base + x_cand) / (n_base + n_cand)
    # pooled variance under H0 keeps early looks with 0 or 1 observed rates from exploding
    v = pooled * (1 - pooled) * (1 / n_base + 1 / n_cand)
    if v <= 0:
        return None
    t2 = tau * tau
    exponent = (p2 - p1) ** 2 * t2 / (2 * v * (v + t2))
    return math.sqrt(v / (v + t2)) * math.exp(min(exponent, 700.0))


def always_valid_p_value(
    looks: Sequence[tuple[int, int, int, int]], *, tau: float = MSPRT_TAU
) -> float | None:
    """Always-valid p-value after cumulative looks (x_base, n_base, x_cand, n_cand).

    p_t = min(1, min over looks s <= t of 1 / Lambda_s): the running minimum is what makes it
    safe to read after every look.
    """
    p: float | None = None
    for x1, n1, x2, n2 in looks:
        lam = msprt_likelihood_ratio(x1, n1, x2, n2, tau=tau)
        if lam is None:
            continue
        p = min(1.0 if p is None else p, 1.0 / lam)
    return p
