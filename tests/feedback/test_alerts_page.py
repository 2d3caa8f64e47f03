import pytest

from feedback.services.alerts import raise_alert, resolve_alert


def test_alerts_page_lists_firing_alerts_by_default(client, viewer_user, application):
    raise_alert(
        rule_key="replica-probe-mismatch",
        target_key="d:1",
        summary="2 replicas disagree",
        application=application,
    )
    raise_alert(rule_key="replica-probe-mismatch", target_key="d:2", summary="old news")
    resolve_alert(rule_key="replica-probe-mismatch", target_key="d:2")
    client.force_login(viewer_user)

    response = client.get("/alerts/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "2 replicas disagree" in html
    assert "old news" not in html
    assert application.slug in html


def test_alerts_page_shows_resolved_alerts_on_request(client, viewer_user):
    raise_alert(rule_key="replica-probe-mismatch", target_key="d:2", summary="old news")
    resolve_alert(rule_key="replica-probe-mismatch", target_key="d:2", reason="replicas agree")
    client.force_login(viewer_user)

    response = client.get("/alerts/", {"state": "resolved"})

    assert "old news" in response.content.decode()
    assert "replicas agree" in response.content.decode()


def test_alerts_page_needs_login(client):
    response = client.get("/alerts/")

    assert response.status_code == 302


@pytest.mark.parametrize("count", [1, 10])
def test_alerts_page_query_count_is_flat(client, viewer_user, django_assert_max_num_queries, count):
    for i in range(count):
        raise_alert(rule_key="replica-probe-mismatch", target_key=f"d:{i}", summary="x")
    client.force_login(viewer_user)

    with django_assert_max_num_queries(6):
        response = client.get("/alerts/")

    assert response.content.decode().count("data-alert=") == count


def test_alert_admin_pages_render(admin_client):
    raise_alert(rule_key="replica-probe-mismatch", target_key="d:1", summary="x")

    for url in (
        "/admin/feedback/alert/",
        "/admin/feedback/alertrule/",
        "/admin/feedback/notificationchannel/add/",
        "/admin/feedback/notificationattempt/",
    ):
        assert admin_client.get(url).status_code == 200, url
