import json

import pytest

from registry.models import AuditEvent, GoldenSet
from tests.factories.registry import UserFactory


@pytest.fixture
def admin_client_(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def form(registered_model, inputs):
    return {
        "registered_model": registered_model.pk,
        "name": "smoke",
        "description": "",
        "rule": "exact",
        "abs_tolerance": "0",
        "rel_tolerance": "0",
        "top_k": "",
        "min_overlap": "1",
        "inputs": json.dumps(inputs),
        "active": "on",
    }


def test_admin_golden_set_add_goes_through_the_audited_service(admin_client_, registered_model):
    response = admin_client_.post(
        "/admin/registry/goldenset/add/", form(registered_model, [{"name": "a", "input": 1}])
    )

    assert response.status_code == 302
    gs = GoldenSet.objects.get()
    assert gs.inputs == [{"name": "a", "input": 1, "expected": None}]
    assert AuditEvent.objects.filter(kind="golden_set.created", actor_label="root").exists()


def test_admin_golden_set_add_shows_invalid_inputs_as_form_error(admin_client_, registered_model):
    response = admin_client_.post(
        "/admin/registry/goldenset/add/", form(registered_model, [{"name": "a"}])
    )

    assert response.status_code == 200
    assert "must be an object with an" in response.content.decode()
    assert not GoldenSet.objects.exists()


def test_admin_consistency_check_list_renders(admin_client_):
    assert admin_client_.get("/admin/registry/consistencycheck/").status_code == 200
