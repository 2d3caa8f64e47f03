import pytest

from dashboard.celery import app as celery_app
from registry.roles import Actor
from registry.services import record_heartbeat
from registry.services.probes import save_golden_set
from tests.factories import registry as rf
from tests.registry.model_servers import model_servers_fixture  # noqa: F401


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_probe_now_shows_the_divergent_replica(
    page, live_server, model_servers, monkeypatch
):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # the probe runs inline
    rf.UserFactory(username="dora", roles=["devops"])
    allocation = rf.TrafficAllocationFactory()
    save_golden_set(
        actor=Actor.system("tests"),
        registered_model=allocation.model_version.registered_model,
        name="smoke",
        inputs=[{"name": "one", "input": {"x": 1}}],
    )
    for i, server in enumerate(model_servers("A", "A", "B")):
        record_heartbeat(
            deployment=allocation.deployment,
            instance_id=f"pod-{i}",
            url=server.url,
            model_version=allocation.model_version,
        )
    page.route("**/plotly.min.js", lambda route: route.abort())  # 4.8 MB this page never uses
    page.goto(f"{live_server.url}/login/?next=/deployments/{allocation.deployment.pk}/replicas/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Never probed")

    page.click("text=Probe now")

    odd = page.locator('article[data-instance="pod-2"]')
    odd.wait_for()
    assert "is-divergent" in odd.get_attribute("class")
    assert "divergent" in odd.inner_text()
    assert page.locator('[data-testid="inconsistent-count"]').inner_text() == "1"
    assert "consistent" in page.locator('article[data-instance="pod-0"]').inner_text()
