"""Registered models, version registration (and its bad inputs) and aliases over the API."""

import pytest

from registry.models import AuditEvent, ModelAlias, ModelVersion, RegisteredModel
from registry.services import move_alias

SHA = "ab" * 32


def version_body(**overrides):
    body = {
        "artifact_uri": "s3://models/ranker/7/model.onnx",
        "sha256": SHA,
        "size_bytes": 123_456,
        "memory_bytes": 400_000,
        "format": "onnx",
        "framework": "pytorch",
        "trained_at": "2026-11-20T08:00:00Z",
        "metrics": {"accuracy": 0.91, "auc": 0.95},
        "reason": "nightly retrain",
    }
    body.update(overrides)
    return body


@pytest.fixture
def writer(token_client, devops_user):
    return token_client(devops_user, "read", "registry:write")


@pytest.fixture
def reader(token_client, viewer_user):
    return token_client(viewer_user, "read")


def versions_url(model):
    return f"/api/v1/models/{model.name}/versions/"


# --- Models ---


def test_models_list_shows_aliases(reader, model_version, devops_actor):
    move_alias(
        actor=devops_actor,
        registered_model=model_version.registered_model,
        name="champion",
        version=model_version,
    )

    body = reader.get("/api/v1/models/").json()

    assert body["results"][0]["aliases"] == [
        {"name": "champion", "version": model_version.version, "protected": True}
    ]


def test_model_create_by_devops(writer):
    response = writer.post("/api/v1/models/", {"name": "eta", "task": "regression"}, format="json")

    assert response.status_code == 201
    assert response.json()["aliases"] == []
    assert RegisteredModel.objects.get(name="eta").task == "regression"
    assert AuditEvent.objects.filter(kind="model.created").count() == 1


def test_model_create_rejects_uppercase_name(writer):
    response = writer.post("/api/v1/models/", {"name": "ETA"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]


def test_model_retrieve_by_name(reader, registered_model):
    response = reader.get(f"/api/v1/models/{registered_model.name}/")

    assert response.status_code == 200
    assert response.json()["name"] == registered_model.name


# --- Version registration ---


def test_register_version_takes_next_number_and_is_audited(writer, model_version):
    model = model_version.registered_model

    response = writer.post(versions_url(model), version_body(), format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["version"] == model_version.version + 1
    assert body["metrics"] == {"accuracy": 0.91, "auc": 0.95}
    mv = ModelVersion.objects.get(registered_model=model, version=body["version"])
    assert mv.sha256 == SHA
    event = AuditEvent.objects.get(kind="version.registered")
    assert event.actor_label == "dora-devops (token test)"
    assert event.reason == "nightly retrain"
    assert event.after["sha256"] == SHA


def test_register_version_with_explicit_number(writer, registered_model):
    response = writer.post(versions_url(registered_model), version_body(version=42), format="json")

    assert response.status_code == 201
    assert response.json()["version"] == 42


def test_register_version_lowercases_sha256(writer, registered_model):
    response = writer.post(
        versions_url(registered_model), version_body(sha256=SHA.upper()), format="json"
    )

    assert response.json()["sha256"] == SHA


def test_register_duplicate_version_number_is_409(writer, model_version):
    model = model_version.registered_model

    response = writer.post(
        versions_url(model), version_body(version=model_version.version), format="json"
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "duplicate"
    assert "version" in error["fields"]
    assert ModelVersion.objects.filter(registered_model=model).count() == 1
    assert not AuditEvent.objects.filter(kind="version.registered").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "abc"),
        ("sha256", "g" * 64),
        ("sha256", SHA + "0"),
        ("size_bytes", -1),
        ("size_bytes", "10"),
        ("size_bytes", 2**63),
        ("memory_bytes", -5),
        ("version", 0),
        ("version", True),
        ("format", "docx"),
        ("trained_at", "yesterday"),
        ("trained_at", 1700000000),
        ("artifact_uri", 0),
        ("metrics", {"accuracy": "high"}),
        ("pipeline_url", "not a url"),
    ],
)
def test_register_version_rejects_bad_field_and_writes_nothing(
    writer, registered_model, field, value
):
    response = writer.post(
        versions_url(registered_model), version_body(**{field: value}), format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert any(name.startswith(field) for name in error["fields"])
    assert not ModelVersion.objects.exists()
    assert not AuditEvent.objects.filter(kind="version.registered").exists()


def test_register_version_rejects_unknown_fields(writer, registered_model):
    response = writer.post(
        versions_url(registered_model), version_body(accuracy=0.9, owner="x"), format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "accuracy": ["Unknown field."],
        "owner": ["Unknown field."],
    }
    assert not ModelVersion.objects.exists()


def test_register_version_requires_sha256_and_size(writer, registered_model):
    body = version_body()
    del body["sha256"], body["size_bytes"]

    response = writer.post(versions_url(registered_model), body, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"sha256", "size_bytes"}


def test_register_version_rejects_a_list_body(writer, registered_model):
    response = writer.post(versions_url(registered_model), [version_body()], format="json")

    assert response.status_code == 400


def test_register_version_rejects_form_encoding(writer, registered_model):
    response = writer.post(versions_url(registered_model), version_body(metrics="{}"))

    assert response.status_code == 415
    assert not ModelVersion.objects.exists()


def test_register_version_of_unknown_model_is_404(writer):
    response = writer.post("/api/v1/models/nope/versions/", version_body(), format="json")

    assert response.status_code == 404


def test_model_versions_list_newest_first(reader, registered_model, model_version_factory):
    for n in (1, 3, 2):
        model_version_factory(registered_model=registered_model, version=n)

    body = reader.get(versions_url(registered_model)).json()

    assert [v["version"] for v in body["results"]] == [3, 2, 1]


def test_model_version_retrieve_by_number(reader, model_version):
    url = f"{versions_url(model_version.registered_model)}{model_version.version}/"

    response = reader.get(url)

    assert response.status_code == 200
    assert response.json()["id"] == model_version.pk


def test_model_version_retrieve_non_number_is_404(reader, registered_model):
    response = reader.get(f"{versions_url(registered_model)}latest/")

    assert response.status_code == 404


# --- Aliases ---


def alias_url(model, alias):
    return f"/api/v1/models/{model.name}/aliases/{alias}"


def test_alias_put_creates_and_moves_keeping_history(
    writer, registered_model, model_version_factory
):
    v1, v2 = model_version_factory.create_batch(2, registered_model=registered_model)
    writer.put(alias_url(registered_model, "challenger"), {"version": v1.version}, format="json")

    response = writer.put(
        alias_url(registered_model, "challenger"),
        {"version": v2.version, "reason": "better AUC"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["version"] == v2.version
    assert [h["version"] for h in body["history"]] == [v2.version, v1.version]
    assert body["history"][0]["assigned_by"] == "dora-devops"
    assert body["history"][1]["replaced_at"] is not None
    assert AuditEvent.objects.filter(kind="alias.moved").count() == 2


def test_alias_post_also_moves(writer, model_version):
    model = model_version.registered_model

    response = writer.post(
        alias_url(model, "staging"), {"version": model_version.version}, format="json"
    )

    assert response.status_code == 200
    assert ModelAlias.objects.get(registered_model=model, name="staging").version == model_version


def test_protected_alias_move_by_product_is_403(
    token_client, product_user, model_version, devops_actor
):
    model = model_version.registered_model
    v2 = ModelVersion.objects.create(
        registered_model=model,
        version=model_version.version + 1,
        artifact_uri="s3://x",
        sha256=SHA,
        size_bytes=1,
        trained_at=model_version.trained_at,
    )
    move_alias(actor=devops_actor, registered_model=model, name="champion", version=model_version)
    client = token_client(product_user, "read", "registry:write")

    response = client.put(alias_url(model, "champion"), {"version": v2.version}, format="json")

    assert response.status_code == 403
    assert "protected" in response.json()["error"]["message"]
    assert ModelAlias.objects.get(registered_model=model, name="champion").version == model_version


def test_unprotected_alias_move_by_product_is_allowed(token_client, product_user, model_version):
    client = token_client(product_user, "read", "registry:write")
    model = model_version.registered_model

    response = client.put(
        alias_url(model, "challenger"), {"version": model_version.version}, format="json"
    )

    assert response.status_code == 200
    assert AuditEvent.objects.get(kind="alias.moved").actor_label.startswith("pat-product")


def test_alias_move_to_unknown_version_is_400(writer, model_version):
    model = model_version.registered_model

    response = writer.put(alias_url(model, "challenger"), {"version": 999}, format="json")

    assert response.status_code == 400
    assert "version" in response.json()["error"]["fields"]
    assert not ModelAlias.objects.exists()


def test_alias_move_with_bad_name_is_400(writer, model_version):
    model = model_version.registered_model

    response = writer.put(
        alias_url(model, "Champion!"), {"version": model_version.version}, format="json"
    )

    assert response.status_code == 400
    assert "alias" in response.json()["error"]["fields"]


def test_aliases_list_and_unknown_alias(reader, model_version, devops_actor):
    model = model_version.registered_model
    move_alias(actor=devops_actor, registered_model=model, name="staging", version=model_version)

    listed = reader.get(f"/api/v1/models/{model.name}/aliases/").json()
    missing = reader.get(alias_url(model, "champion"))

    assert [a["name"] for a in listed["results"]] == ["staging"]
    assert missing.status_code == 404
