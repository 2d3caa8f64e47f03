"""Content-Security-Policy: sent on every page, and the pages still draw their Plotly charts
(and the Swagger UI still renders) in Chromium without a single CSP violation."""

import pytest

from tests.dashboard.pages_data import build_fleet
from tests.factories import registry as rf

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
});
"""


def test_pages_send_a_nonce_policy_without_unsafe_script_sources(client, devops_user):
    client.force_login(devops_user)

    policy = client.get("/")["Content-Security-Policy"]

    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["script-src"].startswith("'self'")
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["style-src-attr"] == "'none'"  # no style="" in markup
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


def test_each_response_gets_a_fresh_nonce_when_a_template_uses_it(rf_request_nonce):
    first, second = rf_request_nonce(), rf_request_nonce()

    assert first != second
    assert len(first) >= 16


@pytest.fixture
def rf_request_nonce():
    from csp.middleware import CSPMiddleware
    from django.test import RequestFactory

    def nonce():
        request = RequestFactory().get("/")
        CSPMiddleware(lambda r: None).process_request(request)
        return str(request.csp_nonce)

    return nonce


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_charts_and_api_docs_render_under_the_policy_without_violations(page, live_server):
    rf.UserFactory(username="cspy", roles=["devops"])
    app, _, model, _, rollout = build_fleet(apps=1)[0]
    messages, errors = [], []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", "cspy")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")

    drawn = {}
    for path in (
        "/",
        f"/applications/{app.slug}/",
        f"/models/{model.name}/",
        f"/rollouts/{rollout.pk}/",
    ):  # noqa: E501
        response = page.goto(live_server.url + path)
        assert "script-src" in response.headers["content-security-policy"]
        page.locator(".chart .main-svg").first.wait_for(timeout=15_000)
        page.wait_for_load_state("networkidle")
        drawn[path] = page.locator(".chart .main-svg").count()
        assert page.evaluate("window.__csp") == [], path

    for path in (
        "/alerts/",
        "/replicas/",
        "/audit/",
        "/tokens/",
        "/feedback/upload/",
        "/feedback/reports/",
        "/admin/",
    ):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__csp") == [], path

    page.goto(live_server.url + "/api/docs/")
    page.locator(".swagger-ui .info .title").wait_for(timeout=15_000)
    assert page.evaluate("window.__csp") == []

    assert all(n >= 1 for n in drawn.values()), drawn
    assert drawn[f"/applications/{app.slug}/"] >= 3
    violations = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
    assert violations == []
    assert errors == []
