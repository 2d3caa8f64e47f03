from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.factories import registry as rf

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def build_small_fleet():
    """Three applications: healthy, canary in progress with a stale replica, SLO breached."""
    now = timezone.now()
    specs = [
        (
            "home-feed",
            "Home feed recommender",
            "growth",
            24,
            [(6, 90, "control"), (2, 10, "canary")],
        ),
        ("fraud-scoring", "Fraud scoring", "risk", 168, [(40, 100, "control")]),
        ("delivery-eta", "Delivery ETA", "logistics", 24, [(30, 100, "control")]),
    ]
    for slug, name, team, slo_h, versions in specs:
        app = rf.ApplicationFactory(
            slug=slug, name=name, team=team, max_model_age=timedelta(hours=slo_h)
        )
        dep = rf.DeploymentFactory(application=app, name="prod", desired_replicas=4)
        model = rf.RegisteredModelFactory(name=f"{slug}-model")
        mvs = []
        for i, (age_h, weight, role) in enumerate(versions):
            mv = rf.ModelVersionFactory(
                registered_model=model, version=12 + i, trained_at=now - timedelta(hours=age_h)
            )
            rf.TrafficAllocationFactory(deployment=dep, model_version=mv, weight=weight, role=role)
            mvs.append(mv)
        for _ in range(4):
            rf.ReplicaFactory(deployment=dep, reported_sha256=mvs[0].sha256)
        if len(mvs) > 1:
            rf.RolloutFactory(
                deployment=dep,
                baseline_version=mvs[0],
                candidate_version=mvs[1],
                state="running",
                steps=[{"percent": 10}, {"percent": 50}, {"percent": 100}],
            )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_login_shows_the_fleet_table(page, live_server):
    rf.UserFactory(username="dora", roles=["devops"])
    build_small_fleet()
    page.set_viewport_size({"width": 1280, "height": 800})

    page.goto(live_server.url + "/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("button[type=submit]")

    rows = page.locator("table.fleet tbody tr")
    rows.first.wait_for()
    assert page.url == live_server.url + "/"
    assert rows.count() == 3
    assert "SLO breached" in page.locator("tr[data-app='delivery-eta']").inner_text()
    page.wait_for_load_state("load")
    assert page.evaluate("[typeof htmx, typeof Plotly]") == ["object", "object"]  # served locally
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: rows become cards
    # Plotly redraws to the new width shortly after the resize: the picture fits the screen
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart .main-svg')].every("
        "svg => svg.getBoundingClientRect().right <= document.documentElement.clientWidth)"
    )
    page.wait_for_timeout(1000)  # for the picture only: the Sankey animates into its new size
    page.screenshot(path=str(ARTIFACTS / "home-narrow.png"), full_page=True)
