"""The `modelops` CLI end to end against a live server, in a subprocess (stdlib only)."""

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.celery import app as celery_app
from registry.models import ModelVersion
from registry.services import record_heartbeat

UNREACHABLE = "http://127.0.0.1:9"


def run_cli(*args: str, url: str, token: str = "") -> tuple[int, str, str]:
    env = {"MODELOPS_URL": url, "MODELOPS_TOKEN": token, "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "modelops_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def cli(live_server, make_token, devops_user):
    token = make_token(devops_user, "read", "registry:write", "feedback:write")

    def run(*args, token=token, url=None):
        return run_cli(*args, url=url or live_server.url, token=token)

    return run


@pytest.fixture
def shop(deployment_factory):
    return deployment_factory(application__slug="shop", name="prod", desired_replicas=1)


GATE = "--fail-on=stale,inconsistent,alerts,rollout-failing"


@pytest.mark.django_db(transaction=True)
def test_register_deploy_then_the_gate_passes_until_a_replica_serves_the_wrong_artifact(
    cli, shop, tmp_path
):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights" * 1000)

    code, out, err = cli(
        "register", "ranker", "--artifact-uri", "s3://m/ranker/1", "--file", str(artifact),
        "--metric", "accuracy=0.93", "--team", "ml", "--format", "onnx",
    )  # fmt: skip
    assert code == 0, err
    version = ModelVersion.objects.get(registered_model__name="ranker", version=1)
    assert version.size_bytes == 7000
    assert version.metrics == {"accuracy": 0.93}

    code, out, err = cli("deploy", "shop/prod", "ranker:1", "--reason", "first release")
    assert code == 0, err
    assert "ranker:1 100%" in out

    record_heartbeat(deployment=shop, instance_id="pod-a", sha256=version.sha256)
    code, out, err = cli("status", "shop", GATE)
    assert code == 0, err
    assert "gate passed" in out

    record_heartbeat(deployment=shop, instance_id="pod-b", sha256="f" * 64)
    code, out, err = cli("status", "shop", GATE)
    assert code == 1
    assert "gate failed [inconsistent]" in err


@pytest.mark.django_db(transaction=True)
def test_status_json_names_the_failing_conditions(cli, shop, traffic_allocation_factory):
    allocation = traffic_allocation_factory(deployment=shop)
    record_heartbeat(deployment=shop, instance_id="pod-b", sha256="e" * 64)

    code, out, _ = cli("status", "shop", "--json", "--fail-on", "inconsistent,alerts")

    assert code == 1
    body = json.loads(out)
    assert list(body["gate"]["failing"]) == ["inconsistent"]
    assert body["deployments"][0]["versions"][0]["version"] == allocation.model_version.version


@pytest.mark.django_db(transaction=True)
def test_a_stale_model_fails_the_stale_gate(cli, shop, traffic_allocation_factory):
    traffic_allocation_factory(
        deployment=shop, model_version__trained_at=timezone.now() - timedelta(days=3)
    )

    code, _, err = cli("status", "shop", "--fail-on", "stale")

    assert code == 1
    assert "[stale]" in err


@pytest.mark.django_db(transaction=True)
def test_a_bad_token_exits_3(cli, shop):
    code, _, err = cli("status", "shop", token="mo_not-a-token")

    assert code == 3
    assert "401" in err


def test_an_unreachable_server_exits_4():
    code, _, err = run_cli("status", "shop", url=UNREACHABLE)

    assert code == 4
    assert "cannot reach" in err


@pytest.mark.parametrize(
    "args",
    [
        ("status", "shop", "--fail-on", "stale,typo"),
        ("deploy", "shop/prod", "ranker"),
        ("register", "ranker", "--artifact-uri", "s3://x"),
        ("feedback", "push", "/nonexistent.csv"),
        ("frobnicate",),
    ],
)
def test_bad_input_exits_2(args):
    code, _, err = run_cli(*args, url=UNREACHABLE)  # refused before any request

    assert code == 2
    assert err


@pytest.mark.django_db(transaction=True)
def test_an_unknown_application_exits_2(cli):
    code, _, err = cli("status", "nope")

    assert code == 2
    assert "404" in err


@pytest.mark.django_db(transaction=True)
def test_feedback_push_reports_accepted_duplicate_and_rejected(
    cli, shop, traffic_allocation_factory, tmp_path, monkeypatch
):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)  # ingest runs in the server
    traffic_allocation_factory(deployment=shop)
    at = (timezone.now() - timedelta(minutes=1)).isoformat()
    rows = ["event_id,occurred_at,kind"]
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(5)]
    rows += [f"{i},{at},impression" for i in ids]
    rows.append(f"{ids[0]},{at},impression")  # the same event again
    rows.append(f"not-a-uuid,{at},impression")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")

    code, out, err = cli(
        "feedback", "push", str(path), "--application", "shop", "--batch-size", "3", "--json"
    )

    assert code == 0, err
    report = json.loads(out)
    assert report["batches"] == 3
    assert (report["accepted"], report["duplicate"], report["rejected"]) == (5, 1, 1), report
    assert (report["accepted"], report["duplicate"], report["rejected"]) == (5, 1, 1)
    assert "processed 3/3" in err


@pytest.mark.django_db(transaction=True)
def test_rollout_start_then_pause_fails_the_rollout_gate_and_rollback_clears_it(
    cli, shop, traffic_allocation_factory, model_version_factory
):
    control = traffic_allocation_factory(deployment=shop, model_version__registered_model__name="r")
    candidate = model_version_factory(registered_model=control.model_version.registered_model)
    ref = f"r:{candidate.version}"

    code, out, err = cli(
        "rollout", "start", "--deployment", "shop/prod", "--candidate", ref, "--steps", "10,50"
    )
    assert code == 0, err
    rollout_id = out.split()[1]
    assert out.strip().endswith("is running")

    code, out, err = cli("rollout", "pause", rollout_id, "--reason", "looks off")
    assert code == 0, err
    code, _, err = cli("status", "shop", "--fail-on", "rollout-failing")
    assert code == 1
    assert f"rollout {rollout_id} is paused" in err

    code, out, err = cli("rollout", "rollback", rollout_id, "--reason", "bad canary")
    assert code == 0, err
    assert out.strip().endswith("is rolled_back")
    assert cli("status", "shop", "--fail-on", "rollout-failing")[0] == 0


def test_jsonl_files_are_cut_into_batches_without_blank_lines(tmp_path):
    from modelops_cli.__main__ import chunks

    path = tmp_path / "events.jsonl"
    path.write_text("".join(f'{{"n": {i}}}\n' + ("\n" if i % 2 else "") for i in range(5)))

    batches = list(chunks(path, 2))

    assert [(fmt, rows) for fmt, _, rows in batches] == [("jsonl", 2), ("jsonl", 2), ("jsonl", 1)]
    assert batches[2][1] == b'{"n": 4}\n'


def test_csv_batches_repeat_the_header(tmp_path):
    from modelops_cli.__main__ import chunks

    path = tmp_path / "events.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6\n")

    batches = list(chunks(path, 2))

    assert [data for _, data, _ in batches] == [b"a,b\n1,2\n3,4\n", b"a,b\n5,6\n"]


@pytest.mark.parametrize("ref", ["ranker:\u00b2", "ranker:\u0663", "ranker:0", "ranker"])
def test_a_version_that_is_not_model_colon_ascii_number_is_an_input_error(ref):
    from modelops_cli.__main__ import EXIT_INPUT, CliError, version_ref

    with pytest.raises(CliError) as caught:
        version_ref(ref)

    assert caught.value.code == EXIT_INPUT


def test_the_cli_imports_nothing_outside_the_standard_library():
    from pathlib import Path

    cli_dir = Path(__file__).resolve().parents[2] / "cli"
    probe = (
        f"import sys; sys.path.insert(0, {str(cli_dir)!r}); import modelops_cli.__main__; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
        " - {'modelops_cli', '__main__'}))"
    )

    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
