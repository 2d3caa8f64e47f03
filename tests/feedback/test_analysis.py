import json
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from feedback.analysis import analyse_rollout
from registry.models import Rollout
from tests.feedback.rollout_helpers import hour_ago, rollup, started_rollout, traffic

GUARDS = [{"metric": "conversion_rate", "max_drop": 0.05, "min_sample": 100}]


@pytest.fixture
def arms(deployment, model_version_factory):
    base = model_version_factory()
    cand = model_version_factory(registered_model=base.registered_model)
    return deployment, base, cand


@pytest.fixture
def ab(arms):
    deployment, base, cand = arms
    return started_rollout(
        deployment, base, cand, strategy="ab_test", steps=[{"percent": 50}], guardrails=GUARDS
    )


def strict_json(doc):
    return json.loads(json.dumps(doc, default=str, allow_nan=False))


def test_analysis_matches_statsmodels_and_scipy_references(ab):
    # given three hours of A/B traffic
    traffic(ab, hours=3, base=(1000, 50), cand=(980, 70))
    xb, nb, xc, nc = 150, 3000, 210, 2940

    # when the rollout is analysed
    doc = strict_json(analyse_rollout(ab))

    # then rates, Wilson intervals, the z-test and SRM match independent references
    base, cand = doc["arms"]
    assert (base["n"], cand["n"]) == (nb, nc)
    assert base["rate"] == pytest.approx(xb / nb)
    assert base["ci"] == pytest.approx(list(proportion_confint(xb, nb, method="wilson")))
    assert cand["ci"] == pytest.approx(list(proportion_confint(xc, nc, method="wilson")))
    z_ref, p_ref = proportions_ztest([xc, xb], [nc, nb])
    assert doc["p_value"] == pytest.approx(p_ref, rel=1e-9)
    assert doc["difference"]["absolute"] == pytest.approx(xc / nc - xb / nb)
    srm_ref = stats.chisquare([nb, nc], f_exp=[(nb + nc) / 2] * 2)
    assert doc["srm_p_value"] == pytest.approx(srm_ref.pvalue, rel=1e-9)
    assert doc["srm"]["verdict"] == "ok"
    assert doc["multiple_testing"]["method"] == "holm"


def test_analysis_welch_matches_scipy_for_conversion_value(ab):
    rng = np.random.default_rng(3)
    app = ab.deployment.application
    samples = {}
    for version, mean in ((ab.baseline_version, 20.0), (ab.candidate_version, 22.0)):
        values = rng.normal(mean, 5.0, 200)
        samples[version.pk] = values
        rollup(app, version, "conversion", hour_ago(2), 200, values.sum(), (values**2).sum())
    a, b = samples[ab.baseline_version.pk], samples[ab.candidate_version.pk]
    ref = stats.ttest_ind_from_stats(
        b.mean(), b.std(ddof=1), 200, a.mean(), a.std(ddof=1), 200, equal_var=False
    )

    doc = analyse_rollout(ab)

    value = next(m for m in doc["metrics"] if m["metric"] == "conversion_value")
    assert value["arms"]["candidate"]["mean"] == pytest.approx(b.mean())
    assert value["p_value"] == pytest.approx(ref.pvalue, rel=1e-8)
    assert value["statistic"] == pytest.approx(ref.statistic, rel=1e-8)


def test_analysis_with_zero_conversions_reports_not_enough_data_without_nan(ab):
    traffic(ab, hours=2, base=(500, 0), cand=(500, 0))

    doc = strict_json(analyse_rollout(ab))

    assert doc["arms"][0]["rate"] == 0.0
    assert doc["p_value"] is None
    assert doc["decision"] == "not_enough_data"
    assert doc["guardrails"][0]["verdict"] == "pass"


def test_analysis_with_one_empty_arm_is_not_enough_data(ab):
    traffic(ab, hours=2, base=(500, 40))

    doc = strict_json(analyse_rollout(ab))

    assert doc["arms"][1]["n"] == 0
    assert doc["arms"][1]["rate"] is None
    assert doc["arms"][1]["ci"] is None
    assert doc["difference"] is None
    assert doc["srm"]["verdict"] == "not_enough_data"
    assert doc["guardrails"][0]["verdict"] == "not_enough_data"


def test_analysis_with_tiny_samples_is_not_enough_data(ab):
    traffic(ab, hours=1, base=(5, 1), cand=(6, 0))

    doc = strict_json(analyse_rollout(ab))

    assert doc["p_value"] is None
    assert doc["always_valid_p_value"] is None
    assert doc["srm"]["verdict"] == "not_enough_data"
    assert doc["guardrails"][0]["verdict"] == "not_enough_data"
    assert all(m["decision"] == "not_enough_data" for m in doc["metrics"])


def test_analysis_flags_sample_ratio_mismatch_against_configured_weights(arms):
    deployment, base, cand = arms
    rollout = started_rollout(deployment, base, cand, steps=[{"percent": 10}, {"percent": 100}])
    traffic(rollout, hours=2, base=(500, 50), cand=(500, 50))  # 50/50, configured 90/10

    doc = analyse_rollout(rollout)

    assert doc["srm"]["expected_weights"] == {"baseline": 90, "candidate": 10}
    assert doc["srm"]["verdict"] == "mismatch"
    assert doc["srm_p_value"] < 0.001


def test_analysis_guardrail_fails_on_a_large_significant_drop(ab):
    traffic(ab, hours=4, base=(2000, 200), cand=(2000, 100))

    doc = analyse_rollout(ab)

    guard = doc["guardrails"][0]
    assert guard["verdict"] == "fail"
    assert "conversion_rate -50.0%" in guard["detail"]
    assert doc["decision"] == "candidate_worse"


def test_analysis_counts_only_hours_since_the_rollout_started(ab):
    traffic(ab, hours=2, base=(100, 10), cand=(100, 10))
    rollup(ab.deployment.application, ab.baseline_version, "impression", hour_ago(5), 9999)

    doc = analyse_rollout(ab)

    assert doc["arms"][0]["n"] == 200


def test_analysis_reports_power(ab):
    traffic(ab, hours=2, base=(1000, 100), cand=(1000, 100))

    power = analyse_rollout(ab, effect=0.1)["power"]

    assert 0 < power["minimum_detectable_effect"] < 0.1
    assert power["exposures_needed"] > 4000
    assert power["additional_exposures_needed"] == power["exposures_needed"] - 4000


def test_analysis_endpoint_returns_the_contract(token_client, viewer_user, ab):
    traffic(ab, hours=2, base=(400, 40), cand=(400, 48))
    client = token_client(viewer_user, "read")

    response = client.get(f"/api/v1/rollouts/{ab.pk}/analysis")

    assert response.status_code == 200
    doc = response.json()
    assert {"n", "rate", "ci"} <= set(doc["arms"][0])
    assert {"difference", "p_value", "srm_p_value", "guardrails"} <= set(doc)
    assert doc["guardrails"][0]["verdict"] in {"pass", "fail", "not_enough_data"}


def test_analysis_endpoint_missing_rollout_is_404(token_client, viewer_user):
    response = token_client(viewer_user, "read").get("/api/v1/rollouts/987654/analysis")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_analysis_endpoint_needs_authentication(client, ab):
    assert client.get(f"/api/v1/rollouts/{ab.pk}/analysis").status_code == 401


def test_analysis_endpoint_rejects_bad_effect(token_client, viewer_user, ab):
    response = token_client(viewer_user, "read").get(
        f"/api/v1/rollouts/{ab.pk}/analysis", {"effect": "lots"}
    )

    assert response.status_code == 400
    assert "effect" in response.json()["error"]["fields"]


@pytest.mark.parametrize("hours", [2, 24])
def test_analysis_query_count_is_flat(ab, django_assert_max_num_queries, hours):
    traffic(ab, hours=hours, base=(100, 10), cand=(100, 10))

    with django_assert_max_num_queries(2):
        analyse_rollout(ab)


def test_analysis_counts_the_hour_the_rollout_started_in_but_srm_waits_for_whole_hours(arms):
    deployment, base, cand = arms
    rollout = started_rollout(deployment, base, cand, strategy="ab_test", steps=[{"percent": 50}])
    Rollout.objects.filter(pk=rollout.pk).update(
        started_at=hour_ago(0) + timedelta(minutes=20),
        step_started_at=hour_ago(0) + timedelta(minutes=20),
    )
    rollout.refresh_from_db()
    traffic_now = [(base, 900), (cand, 300)]  # the baseline also had the first 20 minutes
    for version, impressions in traffic_now:
        rollup(deployment.application, version, "impression", hour_ago(0), impressions)

    doc = analyse_rollout(rollout, now=hour_ago(0) + timedelta(minutes=40))

    assert [a["n"] for a in doc["arms"]] == [900, 300]
    assert doc["srm"]["verdict"] == "not_enough_data"
