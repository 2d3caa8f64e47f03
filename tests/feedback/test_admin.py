import pytest
from django.urls import reverse

from tests.factories.registry import UserFactory


@pytest.fixture
def admin_client_(client):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "model", ["feedbacksource", "ingestbatch", "feedbackreport", "qualityrollup"]
)
def test_admin_changelists_render(
    admin_client_, model, feedback_source_factory, ingest_batch_factory, feedback_report_factory
):
    feedback_source_factory(last_error="HTTP 500")
    ingest_batch_factory()
    feedback_report_factory()

    response = admin_client_.get(reverse(f"admin:feedback_{model}_changelist"))

    assert response.status_code == 200


def test_admin_source_page_shows_last_error(admin_client_, feedback_source_factory):
    source = feedback_source_factory(last_error="HTTP 503 from upstream")

    response = admin_client_.get(reverse("admin:feedback_feedbacksource_change", args=[source.pk]))

    assert "HTTP 503 from upstream" in response.content.decode()
