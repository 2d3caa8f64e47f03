"""The demo fleet that `make run` serves: six applications, thirteen models, 60 days of history.

Everything is written through registry.services, as a real pipeline or operator would, so the
audit log, alias history and allocation history look like the real thing. The data is
deterministic (a fixed random seed; timestamps relative to the first run) and the build is
idempotent: an object that already exists is left alone, so a second run writes nothing.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from . import services
from .models import (
    Application,
    Deployment,
    ModelVersion,
    RegisteredModel,
    Rollout,
    TrafficAllocation,
)
from .roles import DEVOPS, PRODUCT, VIEWER, Actor
from .services import AllocationSpec

SEED = 20260101
HISTORY_DAYS = 60
MB = 1024 * 1024

# username -> (password, role group or None for the superuser, what the role may do)
DEMO_USERS: dict[str, tuple[str, str | None, str]] = {
    "devops": ("devops-demo", DEVOPS, "changes the registry, deployments and rollouts"),
    "product": ("product-demo", PRODUCT, "reads everything, files feedback"),
    "viewer": ("viewer-demo", VIEWER, "reads everything"),
    "admin": ("admin-demo", None, "everything, including /admin/"),
}
# The passwords above, hashed once with Django's default hasher (a fixed salt): hashing four
# passwords at 1,000,000 PBKDF2 rounds would take 3 s of every seed. Django re-hashes them on
# first login if its default ever gets stronger; a test checks that each hash matches.
DEMO_PASSWORD_HASHES = {
    "devops": "pbkdf2_sha256$1000000$seeddemodevops$bLR7LwZQI9iG/tu+LL7ajCsnm9sGlBHptC7MLpcBg2k=",
    "product": "pbkdf2_sha256$1000000$seeddemoproduct$P5AEPJ+xueIdGj7avNV4a48a9uvZKEvJ3vrqzR2Bb7Y=",
    "viewer": "pbkdf2_sha256$1000000$seeddemoviewer$dijsPjICdk4aNDpKb6gNUGT4J0NjgvJxwDPjRDjYfnA=",
    "admin": "pbkdf2_sha256$1000000$seeddemoadmin$L8uXFG4axr0eMHgeEmBv9kLOOwnUvb9Sfgd5aEDxvNQ=",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model and how its training pipeline produces versions."""

    name: str
    team: str
    task: str
    description: str
    format: str
    framework: str
    size_mb: float
    memory_factor: float
    cadence_days: float  # one new version this often over the 60 days
    metrics: dict[str, float]  # the metrics of the first version; later ones drift
    last_trained_hours_ago: float  # age of the newest version at seed time
    drift: float = 0.002  # per-version trend of accuracy-like metrics


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment, its replicas and what serves it now."""

    name: str
    model: str
    replicas: int
    endpoint: str
    # "single": the newest version serves 100 %; "ab_test": 50/50 newest vs previous;
    # "canary": 95/5 previous vs newest; "shadow:<model>": a shadow copy of another model.
    mode: str = "single"
    stale_replica: bool = False  # one replica still serves the previous version
    promote_every: int = 2  # champion changes every Nth version (allocation history)


@dataclass(frozen=True)
class AppSpec:
    slug: str
    name: str
    team: str
    criticality: str
    max_model_age: timedelta
    description: str
    deployments: list[DeploymentSpec] = field(default_factory=list)


# fmt: off
F = ModelVersion.Format
# name, team, task, description, format, framework, size (MB), memory/size, retrain cadence
# (days), first version's metrics, age of the newest version (hours)
MODELS: list[ModelSpec] = [
    ModelSpec("home-feed-ranker", "discovery-ml", "ranking", "Two-tower ranker for the home feed.",
              F.TORCHSCRIPT, "pytorch 2.4", 410, 2.6, 2,
              {"accuracy": 0.712, "auc": 0.781, "ndcg_at_10": 0.402}, 14),
    ModelSpec("home-feed-retrieval", "discovery-ml", "retrieval",
              "Candidate retrieval (ANN over item embeddings).",
              F.SAVEDMODEL, "tensorflow 2.17", 1320, 1.8, 4,
              {"accuracy": 0.641, "recall_at_100": 0.552}, 40),
    ModelSpec("search-ltr", "search-relevance", "ranking",
              "LambdaMART learning-to-rank for search results.",
              F.LIGHTGBM, "lightgbm 4.5", 86, 3.1, 3,
              {"accuracy": 0.774, "ndcg_at_10": 0.521, "mrr": 0.463}, 8),
    ModelSpec("query-intent", "search-relevance", "classification",
              "Query intent classifier (distilled BERT).",
              F.ONNX, "transformers 4.44 / onnxruntime 1.19", 255, 2.2, 7,
              {"accuracy": 0.884, "macro_f1": 0.842}, 60),
    ModelSpec("fraud-gbdt", "risk-ml", "classification",
              "Gradient-boosted trees scoring card payments.",
              F.XGBOOST, "xgboost 2.1", 48, 4.0, 2.5,
              {"accuracy": 0.962, "auc": 0.941, "recall_at_1pct_fpr": 0.612}, 20, drift=0.0008),
    ModelSpec("fraud-graph", "risk-ml", "classification",
              "Graph neural network over the merchant graph, run in shadow.",
              F.TORCHSCRIPT, "pytorch-geometric 2.6", 190, 3.5, 6,
              {"accuracy": 0.951, "auc": 0.935}, 30),
    # The weekly pipeline has been failing: the newest version is 16 days old (SLO 7 days).
    ModelSpec("churn-classifier", "growth-analytics", "classification",
              "Weekly churn propensity for retention campaigns.",
              F.PICKLE, "scikit-learn 1.5", 12, 5.0, 7, {"accuracy": 0.823, "auc": 0.868}, 16 * 24),
    ModelSpec("eta-regressor", "logistics-ml", "regression",
              "Delivery ETA; accuracy is the share of ETAs within 5 minutes.",
              F.ONNX, "lightgbm 4.5 / onnxruntime 1.19", 64, 2.5, 1.5,
              {"accuracy": 0.781, "mae_minutes": 3.9}, 9),
    ModelSpec("eta-prep-time", "logistics-ml", "regression",
              "Restaurant preparation time estimate.",
              F.LIGHTGBM, "lightgbm 4.5", 22, 3.0, 3, {"accuracy": 0.744, "mae_minutes": 2.7}, 30),
    ModelSpec("ticket-classifier", "support-tools", "classification",
              "Routes support tickets to queues.",
              F.ONNX, "transformers 4.44 / onnxruntime 1.19", 268, 2.4, 5,
              {"accuracy": 0.871, "macro_f1": 0.803}, 50),
    ModelSpec("ticket-language-id", "support-tools", "classification",
              "fastText language identification.",
              F.OTHER, "fasttext 0.9", 126, 1.3, 20, {"accuracy": 0.978}, 200),
    ModelSpec("pricing-elasticity", "pricing-ml", "regression",
              "Price elasticity per category (staging only).",
              F.PICKLE, "statsmodels 0.14", 3, 6.0, 10, {"accuracy": 0.692, "mape": 0.143}, 72),
    ModelSpec("demand-forecast", "logistics-ml", "forecasting",
              "Hourly order volume per city (not deployed yet).",
              F.SAVEDMODEL, "tensorflow 2.17", 540, 2.0, 8,
              {"accuracy": 0.812, "smape": 0.118}, 100),
]

# The live tests in progress: strategy -> (steps, guardrails), as registry.services validate.
ROLLOUTS: dict[str, tuple[list[dict[str, int]], list[dict[str, Any]]]] = {
    Rollout.Strategy.AB_TEST: (
        [{"percent": 50, "min_duration_s": 7 * 86400, "min_sample": 20000}],
        [{"metric": "conversion_rate", "max_drop": 0.02, "min_sample": 5000},
         {"metric": "bad_recommendation_rate", "max_drop": 0.05, "min_sample": 2000}],
    ),
    Rollout.Strategy.CANARY: (
        [{"percent": p, "min_duration_s": 4 * 3600, "min_sample": 2000} for p in (5, 25, 50, 100)],
        [{"metric": "click_through_rate", "max_drop": 0.03, "min_sample": 2000}],
    ),
}

D = DeploymentSpec
APPLICATIONS: list[AppSpec] = [
    AppSpec("home-feed", "Home feed recommender", "discovery", "critical", timedelta(hours=96),
            "Personalised items on the app's home screen.", [
                D("prod", "home-feed-ranker", 6, "https://ranker.home-feed.internal/v1/rank",
                  mode="ab_test"),
                D("retrieval", "home-feed-retrieval", 3,
                  "https://retrieval.home-feed.internal/v1/candidates"),
            ]),
    AppSpec("search-ranking", "Search ranking", "search", "critical", timedelta(days=7),
            "Orders search results; query intent picks the vertical.", [
                D("prod", "search-ltr", 8, "https://ltr.search.internal/v2/score", mode="canary"),
                D("intent", "query-intent", 3, "https://intent.search.internal/v1/classify",
                  promote_every=1),
            ]),
    AppSpec("fraud-scoring", "Fraud scoring", "risk", "critical", timedelta(days=3),
            "Scores every card payment before authorisation.", [
                D("prod", "fraud-gbdt", 8, "https://score.fraud.internal/v3/score",
                  mode="shadow:fraud-graph", stale_replica=True),
            ]),
    AppSpec("churn-prediction", "Churn prediction", "growth", "medium", timedelta(days=7),
            "Weekly scores that drive retention campaigns.", [
                D("batch", "churn-classifier", 3, "https://churn.growth.internal/v1/predict",
                  promote_every=1),
            ]),
    AppSpec("delivery-eta", "Delivery ETA", "logistics", "high", timedelta(days=2),
            "The delivery time promised at checkout and on the tracking page.", [
                D("prod", "eta-regressor", 5, "https://eta.logistics.internal/v1/eta",
                  promote_every=3),
                D("prep-time", "eta-prep-time", 3, "https://prep.logistics.internal/v1/estimate"),
            ]),
    AppSpec("support-triage", "Support ticket triage", "support-tools", "low", timedelta(days=14),
            "Routes incoming tickets to the right queue and language.", [
                D("prod", "ticket-classifier", 4, "https://triage.support.internal/v1/route",
                  promote_every=1),
            ]),
]
# fmt: on


def _hex(*parts: Any, length: int = 64) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:length]


@dataclass
class DemoResult:
    """What one run of the seed did."""

    created: dict[str, int] = field(default_factory=dict)
    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.created[kind] = self.created.get(kind, 0) + n


class _Builder:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.rng = random.Random(SEED)
        self.result = DemoResult()
        self.pipeline = Actor.system("seed_demo: training pipeline")
        self.operator: Actor = Actor.system("seed_demo")
        self.port = 18000

    def _next_port(self) -> int:
        self.port += 1
        return self.port

    # --- Users ---

    def users(self) -> None:
        User = get_user_model()
        for username, (password, role, what) in DEMO_USERS.items():
            user = User.objects.filter(username=username).first()
            if user is None:
                superuser = role is None
                user = User.objects.create(
                    username=username,
                    email=f"{username}@example.com",
                    password=DEMO_PASSWORD_HASHES[username],
                    is_staff=superuser,
                    is_superuser=superuser,
                )
                if role:
                    user.groups.add(Group.objects.get_or_create(name=role)[0])
                self.result.add("users")
            self.result.users[username] = (password, role or "superuser", what)
            if role == DEVOPS:
                self.operator = Actor.of(user)

    # --- Models and versions ---

    def model(self, spec: ModelSpec) -> list[ModelVersion]:
        """The model's versions, oldest first; registered only if the model is new."""
        existing = RegisteredModel.objects.filter(name=spec.name).first()
        if existing is not None:
            return list(existing.versions.order_by("version"))
        rng = random.Random(f"{SEED}:{spec.name}")  # per model: adding a model shifts nothing
        registered = services.create_registered_model(
            actor=self.pipeline,
            name=spec.name,
            team=spec.team,
            task=spec.task,
            description=spec.description,
        )
        self.result.add("models")
        newest = self.now - timedelta(hours=spec.last_trained_hours_ago)
        count = max(2, int(HISTORY_DAYS / spec.cadence_days))
        metrics = dict(spec.metrics)
        versions = []
        for i in range(count):
            number = i + 1
            trained_at = newest - timedelta(days=spec.cadence_days * (count - 1 - i))
            trained_at -= timedelta(minutes=rng.randint(0, 90))  # pipelines never run on the dot
            if i:
                metrics = self._drift(metrics, spec.drift, rng)
            size = int(spec.size_mb * MB * (1 + 0.002 * i + rng.uniform(-0.01, 0.01)))
            versions.append(
                services.register_version(
                    actor=self.pipeline,
                    registered_model=registered,
                    version=number,
                    artifact_uri=f"s3://modelops-artifacts/{spec.name}/{number}/model",
                    sha256=_hex(spec.name, number),
                    size_bytes=size,
                    memory_bytes=int(size * spec.memory_factor),
                    format=spec.format,
                    framework=spec.framework,
                    trained_at=trained_at,
                    data_cutoff=trained_at - timedelta(hours=rng.choice([6, 12, 24])),
                    source_commit=_hex("commit", spec.name, number, length=40),
                    pipeline_url=f"https://ci.example.com/{spec.team}/{spec.name}/runs/{4100 + number * 7}",  # noqa: E501
                    metrics=metrics,
                    reason="scheduled retraining",
                )
            )
        self.result.add("versions", len(versions))
        return versions

    @staticmethod
    def _drift(metrics: dict[str, float], trend: float, rng: random.Random) -> dict[str, float]:
        """Next version's metrics: a small trend plus noise; error metrics move the other way."""
        out = {}
        for name, value in metrics.items():
            step = trend + rng.gauss(0, 0.004)
            if name.startswith(("mae", "mape", "smape", "logloss")):
                value = value * (1 - step * 1.5)
            else:
                value = min(0.995, value + step)
            out[name] = round(value, 4)
        return out

    # --- Applications and deployments ---

    def application(self, spec: AppSpec, versions: dict[str, list[ModelVersion]]) -> None:
        app = Application.objects.filter(slug=spec.slug).first()
        if app is None:
            app = services.create_application(
                actor=self.operator,
                slug=spec.slug,
                name=spec.name,
                team=spec.team,
                criticality=spec.criticality,
                max_model_age=spec.max_model_age,
                description=spec.description,
            )
            self.result.add("applications")
        for dspec in spec.deployments:
            if not Deployment.objects.filter(application=app, name=dspec.name).exists():
                self.deployment(app, dspec, versions)

    def deployment(
        self, app: Application, spec: DeploymentSpec, versions: dict[str, list[ModelVersion]]
    ) -> None:
        deployment = services.create_deployment(
            actor=self.operator,
            application=app,
            name=spec.name,
            endpoint_url=spec.endpoint,
            desired_replicas=spec.replicas,
        )
        self.result.add("deployments")
        history = versions[spec.model]
        newest, previous = history[-1], history[-2]
        # Before the current split: the champion changed every `promote_every` versions.
        champions = history[-2 if spec.mode in ("ab_test", "canary") else -1 :: -spec.promote_every]
        champions = sorted(champions, key=lambda v: v.version)
        shadow = self._shadow(spec, versions)
        for champion in champions:
            at = min(champion.trained_at + timedelta(hours=3), self.now - timedelta(hours=1))
            specs = [AllocationSpec(champion, 100)]
            if shadow is not None and champion is champions[-1]:
                specs.append(AllocationSpec(shadow, 0, TrafficAllocation.Role.SHADOW))
            self._allocate(deployment, specs, at, f"promote {champion} after offline evaluation")
        live_test = spec.mode in ROLLOUTS
        self._aliases(champions, newest if live_test else None)
        if live_test:
            self._rollout(deployment, spec.mode, baseline=previous, candidate=newest)
        stale = champions[-2] if spec.stale_replica else None
        self.replicas(deployment, spec, serving=champions[-1], candidate=newest, stale=stale)

    def _shadow(
        self, spec: DeploymentSpec, versions: dict[str, list[ModelVersion]]
    ) -> ModelVersion | None:
        if not spec.mode.startswith("shadow:"):
            return None
        return versions[spec.mode.split(":", 1)[1]][-1]

    def _allocate(
        self, deployment: Deployment, specs: list[AllocationSpec], at: datetime, reason: str
    ) -> None:
        services.set_allocation(
            actor=self.operator, deployment=deployment, allocations=specs, reason=reason, at=at
        )
        self.result.add("allocation changes")

    def _aliases(self, champions: list[ModelVersion], challenger: ModelVersion | None) -> None:
        # champion walks through its last promotions, so the alias has a history
        for champion in champions[-3:]:
            services.move_alias(
                actor=self.operator,
                registered_model=champion.registered_model,
                name="champion",
                version=champion,
                reason="promoted after offline evaluation",
            )
        if challenger is not None:
            services.move_alias(
                actor=self.operator,
                registered_model=challenger.registered_model,
                name="challenger",
                version=challenger,
                reason="candidate under live test",
            )

    def _rollout(
        self,
        deployment: Deployment,
        strategy: str,
        *,
        baseline: ModelVersion,
        candidate: ModelVersion,
    ) -> None:
        """Create and start a rollout through the rollout services (it moves the traffic)."""
        steps, guardrails = ROLLOUTS[strategy]
        rollout = services.create_rollout(
            actor=self.operator,
            deployment=deployment,
            strategy=strategy,
            baseline_version=baseline,
            candidate_version=candidate,
            steps=steps,
            guardrails=guardrails,
            reason=f"live test of {candidate} against {baseline}",
        )
        services.start_rollout(
            actor=self.operator, rollout_id=rollout.pk, reason="offline metrics look better"
        )
        self.result.add("rollouts")

    # --- Replicas ---

    def replicas(
        self,
        deployment: Deployment,
        spec: DeploymentSpec,
        *,
        serving: ModelVersion,
        candidate: ModelVersion,
        stale: ModelVersion | None,
    ) -> None:
        """Heartbeats of every replica; in a split, replicas serve the arms by weight."""
        n_candidate = {"ab_test": spec.replicas // 2, "canary": 1}.get(spec.mode, 0)
        for i in range(spec.replicas):
            version = candidate if i >= spec.replicas - n_candidate else serving
            if stale is not None and i == spec.replicas - 1:
                version = stale  # missed the last promotion: still loads the previous champion
            pod = _hex(deployment.application.slug, spec.name, i, length=5)
            services.record_heartbeat(
                deployment=deployment,
                instance_id=f"{deployment.application.slug}-{spec.name}-{pod}",
                host=f"ip-10-{20 + i}-{self.rng.randint(0, 255)}-{self.rng.randint(1, 254)}",
                # loopback ports nothing listens on: a probe fails fast instead of hanging
                url=f"http://127.0.0.1:{self._next_port()}",
                model_version=version,
                started_at=self.now - timedelta(hours=self.rng.randint(2, 72)),
                at=self.now - timedelta(seconds=self.rng.randint(2, 40)),
            )
        self.result.add("replicas", spec.replicas)


@transaction.atomic
def seed_demo(*, now: datetime | None = None) -> DemoResult:
    """Build the demo fleet (users, models, versions, deployments, rollouts, replicas) once."""
    builder = _Builder(now or timezone.now())
    builder.users()
    versions = {spec.name: builder.model(spec) for spec in MODELS}
    pricing = versions["pricing-elasticity"]
    services.move_alias(
        actor=builder.operator,
        registered_model=pricing[-1].registered_model,
        name="staging",
        version=pricing[-1],
        reason="under review by pricing analysts",
    )
    for app in APPLICATIONS:
        builder.application(app, versions)
    return builder.result
