import pytest

from feedback.models import AlertRule
from feedback.services.alerts import ensure_builtin_rules, raise_alert, resolve_alert
from registry.models import AuditEvent


@pytest.fixture
def reader(token_client, viewer_user):
    return token_client(viewer_user, "read")


@pytest.fixture
def devops_client(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


def test_alert_list_filters_firing_alerts(reader, application):
    raise_alert(
        rule_key="replica-probe-mismatch", target_key="d:1", summary="a", application=application
    )
    raise_alert(rule_key="replica-probe-mismatch", target_key="d:2", summary="b")
    resolve_alert(rule_key="replica-probe-mismatch", target_key="d:2")

    response = reader.get("/api/v1/alerts/", {"state": "firing"})

    assert response.status_code == 200
    [alert] = response.json()["results"]
    assert (alert["summary"], alert["application"], alert["rule"]) == (
        "a",
        application.slug,
        "replica-probe-mismatch",
    )


def test_alert_detail_missing_is_404(reader):
    assert reader.get("/api/v1/alerts/999999/").status_code == 404


def test_alert_list_needs_authentication(client):
    assert client.get("/api/v1/alerts/").status_code == 401


@pytest.mark.parametrize("count", [1, 8])
def test_alert_list_query_count_is_flat(reader, django_assert_max_num_queries, count):
    for i in range(count):
        raise_alert(rule_key="replica-probe-mismatch", target_key=f"d:{i}", summary="x")

    with django_assert_max_num_queries(6):
        response = reader.get("/api/v1/alerts/")

    assert len(response.json()["results"]) == count


def test_create_alert_rule_is_audited(devops_client, application):
    response = devops_client.post(
        "/api/v1/alert-rules/",
        {
            "key": "ctr-floor",
            "name": "CTR below 1 %",
            "metric": "click_through_rate",
            "threshold": 0.01,
            "window": "PT6H",
            "application": application.slug,
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    rule = AlertRule.objects.get(key="ctr-floor")
    assert rule.application == application
    assert AuditEvent.objects.filter(kind="alert_rule.created", target_id=str(rule.pk)).exists()


def test_create_alert_rule_rejects_relative_model_age(devops_client):
    response = devops_client.post(
        "/api/v1/alert-rules/",
        {
            "key": "age-rel",
            "name": "x",
            "metric": "model_age",
            "comparison": "vs_baseline_version",
            "threshold": 0.5,
        },
        format="json",
    )

    assert response.status_code == 400
    assert "comparison" in response.json()["error"]["fields"]
    assert not AlertRule.objects.filter(key="age-rel").exists()


def test_tune_builtin_rule_threshold(devops_client):
    ensure_builtin_rules()
    rule = AlertRule.objects.get(key="conversion-drop")

    response = devops_client.patch(
        f"/api/v1/alert-rules/{rule.pk}/", {"threshold": 0.2}, format="json"
    )

    assert response.status_code == 200
    rule.refresh_from_db()
    assert rule.threshold == 0.2


def test_alert_rule_writes_need_devops(token_client, product_user):
    client = token_client(product_user, "read", "registry:write")

    response = client.post("/api/v1/alert-rules/", {"key": "x"}, format="json")

    assert response.status_code == 403
