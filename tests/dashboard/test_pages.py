import pytest
from django.urls import reverse

from tests.dashboard.pages_data import build_fleet


@pytest.fixture
def devops_client(client, devops_user):
    client.force_login(devops_user)
    return client


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


def _urls(fleet):
    app, dep, model, mvs, rollout = fleet[0]
    return {
        "home": reverse("dashboard:home"),
        "application": reverse("dashboard:application-detail", args=[app.slug]),
        "model": reverse("dashboard:model-detail", args=[model.name]),
        "rollout": reverse("dashboard:rollout-detail", args=[rollout.pk]),
        "replicas": reverse("dashboard:replicas"),
        "audit": reverse("dashboard:audit"),
    }


@pytest.mark.parametrize("page", ["home", "application", "model", "rollout", "replicas", "audit"])
def test_page_renders_with_data(devops_client, page):
    urls = _urls(build_fleet(apps=2))

    response = devops_client.get(urls[page])

    assert response.status_code == 200
    html = response.content.decode()
    assert 'style="' not in html  # a strict CSP forbids inline styles
    assert "<script>" not in html  # and inline scripts; figures travel as JSON data
