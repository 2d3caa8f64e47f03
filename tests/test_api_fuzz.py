"""Fuzz the whole API from its own OpenAPI schema (schemathesis, in-process over WSGI).

Every operation in /api/schema/ is called with generated valid and invalid input by a devops
user whose token holds every scope, over a small fleet so that lists return real rows: no
response may be a 5xx, or differ from what the schema says (status, content type, body).
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck, settings

from registry.models import ApiToken
from registry.roles import Actor
from registry.services import (
    AllocationSpec,
    create_api_token,
    move_alias,
    record_heartbeat,
    set_allocation,
)
from tests.factories import registry as rf

# The schema is fetched at import time, before pytest-django's settings fixture exists.
with override_settings(ALLOWED_HOSTS=["localhost", "testserver"]):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())

# The coverage phase (systematic boundary and invalid values, unexpected methods) finds the
# most but costs about 80 calls per operation; FUZZ_COVERAGE=0 skips it for a quick run.
schema.config.phases.coverage.enabled = os.environ.get("FUZZ_COVERAGE", "1") != "0"
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))

# Cross-field rules (weights summing to 100, a version that must exist, a free slug) cannot be
# written in OpenAPI, so schema-valid input may still get a truthful 400 or 409.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


def small_fleet():
    """One application serving two versions of a model, with an alias, replicas and audit."""
    actor = Actor.system("fuzz")
    deployment = rf.DeploymentFactory()
    v1 = rf.ModelVersionFactory()
    v2 = rf.ModelVersionFactory(registered_model=v1.registered_model)
    move_alias(actor=actor, registered_model=v1.registered_model, name="champion", version=v1)
    set_allocation(
        actor=actor,
        deployment=deployment,
        allocations=[AllocationSpec(v1, 90), AllocationSpec(v2, 10, "canary")],
    )
    record_heartbeat(deployment=deployment, instance_id="pod-0", model_version=v1)
    record_heartbeat(deployment=deployment, instance_id="pod-1")
    return deployment, v1, v2


@pytest.fixture
def fuzz_token(settings):
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    # Like Django's test client: keep the test's connection (and transaction) across requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    small_fleet()
    user = rf.UserFactory(username="fuzz-devops", roles=["devops"])
    _, raw = create_api_token(
        actor=Actor.system("tests"), user=user, name="fuzz", scopes=ApiToken.Scope.values
    )
    yield raw
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.fuzz
@schema.parametrize()
# derandomize: the same examples on every run, so CI is reproducible (a failure reruns alike);
# FUZZ_RANDOM=1 explores new examples locally.
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("FUZZ_RANDOM", "0") != "1",
)
def test_api_conforms_to_its_schema(case, fuzz_token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_token}"}, excluded_checks=EXCLUDED_CHECKS
    )


# --- Happy paths: random path parameters rarely name real objects, so call them explicitly ---


def registry_happy_cases(deployment, v1, v2):
    """(path, method, path parameters, query, body) of successful registry calls."""
    model = v1.registered_model.name
    app = deployment.application.slug
    split = [
        {"model": model, "version": v1.version, "weight": 50, "role": "control"},
        {"model": model, "version": v2.version, "weight": 50, "role": "treatment"},
    ]
    version = {
        "artifact_uri": "s3://m/9/model.onnx",
        "sha256": "e" * 64,
        "size_bytes": 1,
        "trained_at": "2026-11-01T00:00:00Z",
        "metrics": {"accuracy": 0.9},
    }
    return [
        ("/api/v1/applications/{slug}/", "GET", {"slug": app}, None, None),
        ("/api/v1/applications/{slug}/", "PATCH", {"slug": app}, None, {"team": "ml"}),
        ("/api/v1/models/{name}/", "GET", {"name": model}, None, None),
        ("/api/v1/models/{name}/versions/", "POST", {"name": model}, None, version),
        (
            "/api/v1/models/{name}/versions/{version}/",
            "GET",
            {"name": model, "version": v1.version},
            None,
            None,
        ),
        (
            "/api/v1/models/{name}/aliases/{alias}",
            "GET",
            {"name": model, "alias": "champion"},
            None,
            None,
        ),
        (
            "/api/v1/models/{name}/aliases/{alias}",
            "PUT",
            {"name": model, "alias": "champion"},
            None,
            {"version": v2.version},
        ),
        ("/api/v1/versions/{id}/", "GET", {"id": v1.pk}, None, None),
        ("/api/v1/deployments/{id}/", "GET", {"id": deployment.pk}, None, None),
        (
            "/api/v1/deployments/{id}/allocation",
            "GET",
            {"id": deployment.pk},
            {"at": "2000-01-01T00:00:00Z"},
            None,
        ),
        (
            "/api/v1/deployments/{id}/allocation",
            "PUT",
            {"id": deployment.pk},
            None,
            {"allocations": split},
        ),
        ("/api/v1/replicas/{id}/", "GET", {"id": deployment.replicas.first().pk}, None, None),
    ]


@pytest.mark.fuzz
def test_registry_happy_paths_conform_to_the_schema(settings):
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        fleet = small_fleet()
        user = rf.UserFactory(username="fuzz-devops", roles=["devops"])
        _, raw = create_api_token(
            actor=Actor.system("tests"), user=user, name="fuzz", scopes=ApiToken.Scope.values
        )
        for path, method, params, query, body in registry_happy_cases(*fleet):
            operation = schema[path][method]
            case = operation.Case(
                path_parameters=params, query=query, **({"body": body} if body else {})
            )
            response = case.call_and_validate(headers={"Authorization": f"Bearer {raw}"})
            assert response.status_code < 300, (method, path, response.text)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
