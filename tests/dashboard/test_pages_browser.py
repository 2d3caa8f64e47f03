"""The pages in Debian's Chromium: a walk through every page per role, charts really drawn,
a devops pause with a reason that shows up in the audit log, a viewer who cannot act."""

from pathlib import Path

import pytest

from registry.models import Rollout
from tests.dashboard.pages_data import build_fleet
from tests.factories import registry as rf

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _login(page, live_server, username):
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _chart_drawn(page):
    page.locator(".chart .main-svg").first.wait_for(timeout=15_000)
    return page.locator(".chart .main-svg").count()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_devops_walks_the_pages_and_pauses_a_rollout(page, live_server):
    rf.UserFactory(username="dora", roles=["devops"])
    fleet = build_fleet(apps=3)
    app, dep, model, mvs, rollout = fleet[0]
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.set_viewport_size({"width": 1280, "height": 900})
    _login(page, live_server, "dora")

    assert page.locator("table.fleet tbody tr").count() == 3
    assert _chart_drawn(page) >= 1  # the Sankey map
    _shot(page, "fleet")
    page.click(f"a.app-name[href='/applications/{app.slug}/']")
    page.wait_for_url(f"**/applications/{app.slug}/")
    assert _chart_drawn(page) >= 3  # traffic split, version timeline, quality by version
    _shot(page, "application")

    page.click(f"td a[href='/models/{model.name}/']")
    page.wait_for_url(f"**/models/{model.name}/")
    assert _chart_drawn(page) >= 1
    assert app.name in page.locator("section.card").first.inner_text()  # a consumer
    _shot(page, "model")

    page.go_back()
    page.click(f"a[href='/rollouts/{rollout.pk}/']")
    page.wait_for_url(f"**/rollouts/{rollout.pk}/")
    assert _chart_drawn(page) >= 1  # per-arm figures with error bars
    _shot(page, "rollout")
    page.click(".action-pause summary")
    page.fill("#reason-pause", "conversion dips on the canary, looking into it")
    page.click(".action-pause button[type=submit]")
    page.wait_for_url(f"**/rollouts/{rollout.pk}/")
    assert page.get_by_test_id("rollout-state").inner_text() == "paused"
    assert page.locator(".action-resume").count() == 1

    page.click("nav.nav a[href='/audit/']")
    page.select_option("select[name=kind]", "rollout.paused")
    page.click(".audit-filters button[type=submit]")
    row = page.locator("table.audit tbody tr").first
    assert "conversion dips on the canary" in row.inner_text()
    _shot(page, "audit")

    page.click("nav.nav a[href='/replicas/']")
    page.locator(".rep-card").first.wait_for()
    assert page.locator(".cells .cell.stale").count() == 3  # one stale replica per deployment
    _shot(page, "replicas")
    page.locator(f".rep-card[data-deployment='{dep.pk}'] header a").click()
    page.wait_for_url(f"**/deployments/{dep.pk}/replicas/")
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(live_server.url + f"/applications/{app.slug}/")
    _chart_drawn(page)
    _shot(page, "application-narrow")
    assert errors == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ["product", "viewer"])
def test_browser_other_roles_read_but_cannot_act(page, live_server, role):
    rf.UserFactory(username="vic", roles=[role])
    rollout = build_fleet(apps=1)[0][4]
    page.set_viewport_size({"width": 1280, "height": 900})
    _login(page, live_server, "vic")

    page.goto(live_server.url + f"/rollouts/{rollout.pk}/")
    assert _chart_drawn(page) >= 1
    assert page.locator(".actions-card, .action-form").count() == 0
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        live_server.url + f"/rollouts/{rollout.pk}/pause/",
        form={"reason": "forged", "csrfmiddlewaretoken": token},
        headers={"Referer": live_server.url + f"/rollouts/{rollout.pk}/", "X-CSRFToken": token},
    )

    assert forged.status == 403
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.RUNNING
