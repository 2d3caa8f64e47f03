"""The fleet table's display rows: the same text, links and escaping the template produced."""

from datetime import UTC, datetime

from django.urls import reverse

from dashboard.fleet_rows import fleet_rows
from dashboard.selectors import (
    ApplicationStatus,
    Attention,
    DeploymentStatus,
    RolloutStatus,
    ServingVersion,
    VersionRef,
)
from registry.selectors import ReplicaCounts

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _version(version, role, weight, online=None, model="ranker"):
    return ServingVersion(
        version_id=version, model=model, version=version, role=role, weight=weight,
        sha256="a" * 64, trained_at=T0, age_seconds=7200, slo_breached=False, age_ratio=0.5,
        offline_accuracy=0.913, online_accuracy=online,
    )  # fmt: skip


def _app(deployments, **extra):
    return ApplicationStatus(
        id=1, slug="shop", name="Shop", team="search", criticality="high",
        max_model_age_s=86400, deployments=deployments, **extra,
    )  # fmt: skip


def _deployment(name, versions, environment="production", rollout=None):
    return DeploymentStatus(
        id=9, name=name, environment=environment, endpoint_url="", versions=versions,
        replicas=ReplicaCounts(expected=4, reporting=3), active_rollout=rollout,
    )  # fmt: skip


def test_rows_link_like_reverse_and_count_in_words():
    rollout = RolloutStatus(
        id=42, state="running", strategy="ab_test", step_index=1, step_count=4, percent=25,
        baseline=VersionRef("ranker", 6), candidate=VersionRef("ranker", 7), started_at=T0,
    )  # fmt: skip
    app = _app([_deployment("prod", [_version(7, "control", 100)], rollout=rollout)])

    (row,) = fleet_rows([app], {1: Attention(alerts=1, open_reports=2)})

    assert row.url == reverse("dashboard:application-detail", args=["shop"])
    assert row.row_class == "level-ok needs-attention"
    assert (row.reports, row.replicas) == ("2 open reports", "3/4")
    assert f'href="{reverse("dashboard:model-detail", args=["ranker"])}"' in row.serving
    (cell,) = row.rollouts
    assert cell.url == reverse("dashboard:rollout-detail", args=[42])
    assert (cell.title, cell.step, cell.change) == (
        "A/B test · running",
        "step 2/4 · 25%",
        "v6 → v7",
    )


def test_serving_cell_leaves_shadows_out_of_the_split_bar_and_calls_them_copies():
    versions = [_version(7, "control", 90), _version(8, "canary", 10), _version(9, "shadow", 0)]

    (row,) = fleet_rows([_app([_deployment("prod", versions)])], {})

    assert row.serving.count('<rect class="seg-') == 2
    assert 'x="90" y="0" width="10"' in row.serving
    assert '<span class="v-weight">copy</span>' in row.serving


def test_cells_escape_every_name():
    app = _app([_deployment("<b>eu</b>", [_version(7, "control", 100, model='r"x')], "staging")])

    (row,) = fleet_rows([app], {})

    assert "<b>" not in row.serving
    assert "&lt;b&gt;eu&lt;/b&gt;" in row.serving
    assert "r&quot;x" in row.serving


def test_accuracy_cell_mutes_a_version_without_online_figure():
    versions = [_version(7, "control", 90, online=0.885), _version(8, "canary", 10)]

    (row,) = fleet_rows([_app([_deployment("prod", versions)])], {})

    assert (
        '<span class="online" title="online, from labelled feedback">88.5%</span>' in row.accuracy
    )
    assert '<span class="online muted" title="online, from labelled feedback">—</span>' in (
        row.accuracy
    )


def test_an_application_without_deployments_says_so():
    (row,) = fleet_rows([_app([])], {})

    assert "No deployment yet" in row.serving
    assert row.accuracy == '<span class="muted">—</span>'
