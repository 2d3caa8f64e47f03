"""Rollout analysis: hourly rollups of the two arms → per-arm figures, tests and verdicts.

The arms are the rollout's baseline and candidate versions within its application, from the
hour in which the rollout started (so figures appear at once; that first bucket also holds
the baseline's traffic of the minutes before the start). The sample-ratio test reads only
whole hours since the current step began, when the configured split was constant all hour:
a bucket straddling a change of split would otherwise look like a mismatch. A step's
sample counts the candidate's exposures from the hour its step began.

Every number that would be NaN or infinite is None and the verdict says "not_enough_data".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from registry.models import Rollout
from registry.services.rollouts import GUARDRAIL_METRICS, configured_weights

from . import statistics as st
from .models import QualityRollup

MIN_ARM_SAMPLE = 30  # below this per arm, a test's normal approximation is not trusted
DEFAULT_POWER_EFFECT = 0.05  # relative lift the power estimate is quoted for
PROPORTIONS = {  # metric -> (numerator, denominator) as names of ArmTotals attributes
    "conversion_rate": ("conversions", "impressions"),
    "click_through_rate": ("clicks", "impressions"),
    "bad_recommendation_rate": ("bad_recommendations", "impressions"),
    "accuracy": ("correct", "labelled"),
}
CONTINUOUS = ("conversion_value",)
METRICS = (*PROPORTIONS, *CONTINUOUS)


# --- Reading rollups ---


@dataclass
class ArmTotals:
    """What the rollups of one arm add up to."""

    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    bad_recommendations: int = 0
    correct: int = 0
    labelled: int = 0
    value_n: int = 0
    value_sum: float = 0.0
    value_sum_sq: float = 0.0

    def add(
        self, kind: str, count: int, total: float, total_sq: float, correct: int, labelled: int
    ) -> None:
        attr = {
            "impression": "impressions",
            "click": "clicks",
            "conversion": "conversions",
            "bad_recommendation": "bad_recommendations",
        }.get(kind)
        if attr:
            setattr(self, attr, getattr(self, attr) + count)
        if kind == "conversion":
            self.value_n += count
            self.value_sum += total
            self.value_sum_sq += total_sq
        self.correct += correct
        self.labelled += labelled

    def copy(self) -> ArmTotals:
        return ArmTotals(**self.__dict__)


@dataclass
class ArmSeries:
    """Cumulative totals of both arms after each hour, in hour order."""

    hours: list[datetime] = field(default_factory=list)
    baseline: list[ArmTotals] = field(default_factory=list)
    candidate: list[ArmTotals] = field(default_factory=list)

    def final(self) -> tuple[ArmTotals, ArmTotals]:
        if not self.hours:
            return ArmTotals(), ArmTotals()
        return self.baseline[-1], self.candidate[-1]


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    floor = floor_hour(at)
    return floor if floor == at else floor + timedelta(hours=1)


def rollout_series(rollout: Rollout, *, since: datetime, until: datetime) -> ArmSeries:
    """Cumulative hourly totals of the two arms from `since` (one query)."""
    rows = (
        QualityRollup.objects.filter(
            application_id=rollout.deployment.application_id,
            model_version_id__in=[rollout.baseline_version_id, rollout.candidate_version_id],
            hour__gte=since,
            hour__lte=until,
        )
        .order_by("hour")
        .values_list(
            "hour", "model_version_id", "kind", "count", "sum", "sum_sq", "correct", "labelled"
        )
    )
    by_hour: dict[datetime, dict[int, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for hour, version_id, *rest in rows:
        by_hour[hour][version_id].append(tuple(rest))
    series = ArmSeries()
    base, cand = ArmTotals(), ArmTotals()
    for hour in sorted(by_hour):
        for totals, version_id in (
            (base, rollout.baseline_version_id),
            (cand, rollout.candidate_version_id),
        ):
            for kind, count, total, total_sq, correct, labelled in by_hour[hour][version_id]:
                totals.add(kind, count, total or 0.0, total_sq or 0.0, correct, labelled)
        series.hours.append(hour)
        series.baseline.append(base.copy())
        series.candidate.append(cand.copy())
    return series


# --- Per-metric figures ---


def _pair(pair: tuple[float, float] | None) -> list[float] | None:
    return [pair[0], pair[1]] if pair else None


def _difference(diff: st.Difference | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    return {
        "absolute": diff.absolute,
        "absolute_ci": _pair(diff.absolute_ci),
        "relative": diff.relative,
        "relative_ci": _pair(diff.relative_ci),
    }


def proportion_metric(name: str, series: ArmSeries) -> dict[str, Any]:
    """Rates, Wilson intervals, difference, z-test and the always-valid p-value of one rate."""
    num, den = PROPORTIONS[name]
    base, cand = series.final()
    arms = {}
    for arm, totals in (("baseline", base), ("candidate", cand)):
        x, n = min(getattr(totals, num), getattr(totals, den)), getattr(totals, den)
        arms[arm] = {
            "n": n,
            "successes": x,
            "rate": x / n if n else None,
            "ci": _pair(st.wilson_interval(x, n)),
        }
    xb, nb = arms["baseline"]["successes"], arms["baseline"]["n"]
    xc, nc = arms["candidate"]["successes"], arms["candidate"]["n"]
    enough = min(nb, nc) >= MIN_ARM_SAMPLE
    test = st.two_proportion_ztest(xc, nc, xb, nb) if enough else None
    looks = [
        (
            min(getattr(b, num), getattr(b, den)),
            getattr(b, den),
            min(getattr(c, num), getattr(c, den)),
            getattr(c, den),
        )
        for b, c in zip(series.baseline, series.candidate, strict=True)
        if min(getattr(b, den), getattr(c, den)) >= MIN_ARM_SAMPLE
    ]
    return {
        "metric": name,
        "type": "proportion",
        "test": "two-proportion z-test (pooled)",
        "higher_is_better": GUARDRAIL_METRICS[name],
        "arms": arms,
        "difference": _difference(st.rate_difference(xb, nb, xc, nc)),
        "statistic": test.statistic if test else None,
        "p_value": test.p_value if test else None,
        "always_valid_p_value": st.always_valid_p_value(looks) if enough else None,
    }


def continuous_metric(name: str, series: ArmSeries) -> dict[str, Any]:
    """Means from count/sum/sum of squares, Welch's t-test and its interval."""
    base, cand = series.final()
    mb = st.moments(base.value_n, base.value_sum, base.value_sum_sq)
    mc = st.moments(cand.value_n, cand.value_sum, cand.value_sum_sq)
    arms = {}
    for arm, m, totals in (("baseline", mb, base), ("candidate", mc, cand)):
        arms[arm] = {
            "n": totals.value_n,
            "mean": m.mean if m else None,
            "std": m.variance**0.5 if m else None,
        }
    enough = mb is not None and mc is not None and min(mb.n, mc.n) >= MIN_ARM_SAMPLE
    test = st.welch_ttest(mb, mc) if enough else None
    return {
        "metric": name,
        "type": "continuous",
        "test": "Welch's t-test",
        "higher_is_better": GUARDRAIL_METRICS[name],
        "arms": arms,
        "difference": _difference(st.mean_difference(mb, mc)) if enough else None,
        "statistic": test.statistic if test else None,
        "p_value": test.p_value if test else None,
        # the mixture test here is for rates; a mean's verdict falls back to its fixed p-value
        "always_valid_p_value": None,
    }


def _decide(metric: dict[str, Any], alpha: float) -> str:
    p = metric["always_valid_p_value_adjusted"]
    if p is None:
        p = metric["p_value_adjusted"] if metric["type"] == "continuous" else None
    if p is None or metric["difference"] is None:
        return "not_enough_data"
    if p >= alpha:
        return "no_significant_difference"
    better = (metric["difference"]["absolute"] > 0) == metric["higher_is_better"]
    return "candidate_better" if better else "candidate_worse"


def adjust(metrics: list[dict[str, Any]], *, alpha: float) -> None:
    """Holm across the metrics with a p-value, for both fixed and always-valid p-values."""
    for key in ("p_value", "always_valid_p_value"):
        adjusted = st.holm_adjust([m[key] for m in metrics])
        for m, p in zip(metrics, adjusted, strict=True):
            m[f"{key}_adjusted"] = p
    for m in metrics:
        m["decision"] = _decide(m, alpha)


# --- Guardrails, SRM, power ---


def guardrail_verdict(rule: dict[str, Any], metric: dict[str, Any], alpha: float) -> dict[str, Any]:
    """pass / fail / not_enough_data for one guardrail.

    Fails only when the candidate is worse by more than the tolerated relative drop AND the
    peeking-safe test says the difference is real, so hourly checks do not pause a rollout on
    noise. Below the guardrail's minimum sample per arm there is no verdict.
    """
    out = {"metric": rule["metric"], "max_drop": rule["max_drop"], "min_sample": rule["min_sample"]}
    n = min(metric["arms"]["baseline"]["n"], metric["arms"]["candidate"]["n"])
    if n < rule["min_sample"] or metric["difference"] is None:
        return {
            **out,
            "verdict": "not_enough_data",
            "detail": f"{n} of {rule['min_sample']} per arm",
        }
    key = "rate" if metric["type"] == "proportion" else "mean"
    base = metric["arms"]["baseline"][key]
    delta = metric["difference"]["absolute"] * (1 if metric["higher_is_better"] else -1)
    beyond = -delta > rule["max_drop"] * abs(base)  # worse by more than tolerated
    p = metric["always_valid_p_value_adjusted"]
    if p is None and metric["type"] == "continuous":
        p = metric["p_value_adjusted"]
    relative = metric["difference"]["relative"]
    shown = (
        f"{relative:+.1%}" if relative is not None else f"{metric['difference']['absolute']:+.4g}"
    )
    shown_p = "n/a" if p is None else f"{p:.3g}"
    detail = (
        f"{rule['metric']} {shown} vs baseline (tolerated -{rule['max_drop']:.1%}), p={shown_p}"
    )
    if beyond and p is not None and p < alpha:
        return {**out, "verdict": "fail", "detail": detail}
    return {**out, "verdict": "pass", "detail": detail}


def srm_check(rollout: Rollout, *, until: datetime) -> dict[str, Any]:
    """Exposures of the current step against its configured split."""
    weights = configured_weights(rollout)
    since = ceil_hour(rollout.step_started_at or rollout.started_at or until)
    out: dict[str, Any] = {"since": since, "expected_weights": weights, "alpha": st.SRM_ALPHA}
    if rollout.strategy == Rollout.Strategy.SHADOW or 0 in weights.values():
        return {**out, "verdict": "not_applicable", "p_value": None, "observed": None}
    base, cand = rollout_series(rollout, since=since, until=until).final()
    observed = {"baseline": base.impressions, "candidate": cand.impressions}
    res = st.sample_ratio_mismatch(
        [base.impressions, cand.impressions], [weights["baseline"], weights["candidate"]]
    )
    return {**out, "verdict": res.verdict, "p_value": res.p_value, "observed": observed}


def power_estimate(
    primary: dict[str, Any], *, candidate_share: float, effect: float
) -> dict[str, Any]:
    """Fixed-horizon power of the primary rate: MDE now, and exposures for a relative `effect`."""
    base, cand = primary["arms"]["baseline"], primary["arms"]["candidate"]
    out: dict[str, Any] = {
        "metric": primary["metric"],
        "alpha": st.ALPHA,
        "power": 0.8,
        "effect_relative": effect,
    }
    p = base["rate"]
    mde = st.minimum_detectable_effect(p, base["n"], cand["n"]) if p is not None else None
    needed = st.exposures_needed(p, p * effect, candidate_share=candidate_share) if p else None
    return {
        **out,
        "minimum_detectable_effect": mde,
        "minimum_detectable_effect_relative": mde / p if mde is not None and p else None,
        "exposures_needed": needed,
        "additional_exposures_needed": max(0, needed - base["n"] - cand["n"]) if needed else None,
        "note": "fixed-horizon power; the peeking-safe test needs somewhat more data",
    }


# --- The whole analysis ---


def _version(v: Any) -> dict[str, Any]:
    return {"id": v.pk, "model": v.registered_model.name, "version": v.version}


def analyse_rollout(
    rollout: Rollout,
    *,
    now: datetime | None = None,
    effect: float = DEFAULT_POWER_EFFECT,
    alpha: float = st.ALPHA,
) -> dict[str, Any]:
    """The analysis document of GET /api/v1/rollouts/{id}/analysis."""
    now = now or timezone.now()
    doc: dict[str, Any] = {
        "rollout": rollout.pk,
        "state": rollout.state,
        "strategy": rollout.strategy,
        "computed_at": now,
        "alpha": alpha,
        "baseline": _version(rollout.baseline_version),
        "candidate": _version(rollout.candidate_version),
    }
    if rollout.started_at is None:
        series, since = ArmSeries(), None
    else:
        since = floor_hour(rollout.started_at)
        end = rollout.finished_at or now
        series = rollout_series(rollout, since=since, until=end)
    metrics = [proportion_metric(m, series) for m in PROPORTIONS] + [
        continuous_metric(m, series) for m in CONTINUOUS
    ]
    adjust(metrics, alpha=alpha)
    by_name = {m["metric"]: m for m in metrics}
    primary_name = next(
        (g["metric"] for g in rollout.guardrails if g["metric"] in PROPORTIONS), "conversion_rate"
    )
    primary = by_name[primary_name]
    weights = configured_weights(rollout)
    srm = (
        srm_check(rollout, until=now)
        if rollout.started_at
        else {
            "verdict": "not_enough_data",
            "p_value": None,
            "observed": None,
            "expected_weights": weights,
        }
    )
    doc.update(
        window={"since": since, "hours": len(series.hours)},
        primary_metric=primary_name,
        arms=[
            {"arm": arm, "version": doc[arm], **primary["arms"][arm]}
            for arm in ("baseline", "candidate")
        ],
        difference=primary["difference"],
        p_value=primary["p_value"],
        always_valid_p_value=primary["always_valid_p_value"],
        decision=primary["decision"],
        srm_p_value=srm["p_value"],
        srm=srm,
        metrics=metrics,
        multiple_testing={
            "method": "holm",
            "family": [m["metric"] for m in metrics if m["p_value"] is not None],
            "note": "p_value_adjusted and always_valid_p_value_adjusted are Holm-adjusted "
            "across the family",
        },
        sequential={
            "method": "mSPRT",
            "mixture_sd": st.MSPRT_TAU,
            "looks": len(series.hours),
            "note": "always-valid p-value: safe to read after every hourly look",
        },
        power=power_estimate(
            primary, candidate_share=max(weights["candidate"], 1) / 100, effect=effect
        ),
        guardrails=[guardrail_verdict(g, by_name[g["metric"]], alpha) for g in rollout.guardrails],
    )
    return doc


def step_progress(rollout: Rollout, *, now: datetime) -> dict[str, Any]:
    """Whether the current step's minimum duration and sample (candidate exposures) are met."""
    step = rollout.steps[rollout.current_step] if rollout.current_step < len(rollout.steps) else {}
    started = rollout.step_started_at or rollout.started_at or now
    elapsed = (now - started).total_seconds()
    _, cand = rollout_series(rollout, since=floor_hour(started), until=now).final()
    return {
        "elapsed_s": elapsed,
        "sample": cand.impressions,
        "duration_met": elapsed >= step.get("min_duration_s", 0),
        "sample_met": cand.impressions >= step.get("min_sample", 0),
    }


def verdict_summary(analysis: dict[str, Any]) -> Iterable[str]:
    """Human lines for an audit reason: failing guardrails and SRM."""
    for g in analysis["guardrails"]:
        if g["verdict"] == "fail":
            yield f"guardrail failed: {g['detail']}"
    srm = analysis["srm"]
    if srm["verdict"] == "mismatch":
        yield (
            f"sample-ratio mismatch: observed {srm['observed']} vs weights "
            f"{srm['expected_weights']}, p={srm['p_value']:.2e}"
        )
