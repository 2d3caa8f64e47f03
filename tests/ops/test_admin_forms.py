"""Admin forms of models with URL fields: they render without Django 6 deprecations (the
suite turns RemovedInDjango60Warning into an error) and take a bare host as https."""

import pytest
from django.contrib.admin.sites import site
from django.urls import reverse

from feedback.admin import FeedbackSourceAdmin
from feedback.models import FeedbackSource

URL_MODELS = [
    "registry_modelversion", "registry_deployment", "registry_replica",
    "feedback_feedbacksource", "dashboard_webhooksubscription",
]  # fmt: skip


@pytest.mark.parametrize("model", URL_MODELS)
def test_admin_add_form_of_a_model_with_a_url_renders(admin_client, model):
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 200


def test_admin_takes_a_url_without_scheme_as_https():
    model_admin = FeedbackSourceAdmin(FeedbackSource, site)
    field = model_admin.formfield_for_dbfield(FeedbackSource._meta.get_field("url"), None)

    assert field.clean("events.example.com/feed") == "https://events.example.com/feed"
