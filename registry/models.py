"""Registry data: which model versions exist, where they serve, and who changed what.

Models hold data and invariants only; every write goes through registry.services.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

SHA256_RE = r"^[0-9a-f]{64}$"
sha256_validator = RegexValidator(SHA256_RE, "Enter a sha256 as 64 lowercase hex digits.")
slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9_-]*$", "Use lowercase letters, digits, - and _.")


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


# --- Applications and models ---


class Application(TimestampedModel):
    """A product that consumes model predictions, with its model-age SLO."""

    class Criticality(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"
        CRITICAL = "critical"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    team = models.CharField(max_length=100, db_index=True)
    criticality = models.CharField(
        max_length=16, choices=Criticality.choices, default=Criticality.MEDIUM
    )
    max_model_age = models.DurationField(help_text="Age SLO: retrain at least this often.")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class RegisteredModel(TimestampedModel):
    """A named ML model whose trained artifacts are its versions."""

    name = models.CharField(max_length=100, unique=True, validators=[slug_validator])
    team = models.CharField(max_length=100, blank=True)
    task = models.CharField(max_length=100, blank=True, help_text="e.g. ranking, classification")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(TimestampedModel):
    """One trained artifact of a registered model, immutable once registered."""

    class Format(models.TextChoices):
        ONNX = "onnx"
        SAVEDMODEL = "savedmodel"
        TORCHSCRIPT = "torchscript"
        PICKLE = "pickle"
        XGBOOST = "xgboost"
        LIGHTGBM = "lightgbm"
        OTHER = "other"

    class Stage(models.TextChoices):
        NONE = "none"
        STAGING = "staging"
        PRODUCTION = "production"
        ARCHIVED = "archived"

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="versions"
    )
    version = models.PositiveIntegerField()
    artifact_uri = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64, validators=[sha256_validator], db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    memory_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.OTHER)
    framework = models.CharField(max_length=50, blank=True)
    trained_at = models.DateTimeField()
    data_cutoff = models.DateTimeField(null=True, blank=True)
    source_commit = models.CharField(max_length=64, blank=True)
    pipeline_url = models.URLField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Offline metrics, name → value")
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.NONE)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["registered_model_id", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "version"], name="%(app_label)s_%(class)s_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.version}"

    @property
    def offline_accuracy(self) -> float | None:
        value = (self.metrics or {}).get("accuracy")
        return float(value) if isinstance(value, int | float) else None


class ModelAlias(TimestampedModel):
    """A movable name (champion, challenger, staging...) pointing at one version of a model."""

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="aliases"
    )
    name = models.CharField(max_length=50, validators=[slug_validator])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    protected = models.BooleanField(
        default=False, help_text="Only the devops role may move a protected alias."
    )

    class Meta:
        ordering = ["registered_model_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "name"], name="%(app_label)s_%(class)s_unique_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name}@{self.name}"


class AliasAssignment(models.Model):
    """History of an alias: it pointed at `version` from `assigned_at` until `replaced_at`."""

    alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="history")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    assigned_at = models.DateTimeField(db_index=True)
    replaced_at = models.DateTimeField(null=True, blank=True)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["alias_id", "-assigned_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["alias"],
                condition=Q(replaced_at__isnull=True),
                name="%(app_label)s_%(class)s_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.alias} → v{self.version_id} from {self.assigned_at:%Y-%m-%d %H:%M}"


# --- Deployments ---


class Deployment(TimestampedModel):
    """An application's use of models in one environment, behind one endpoint."""

    class Environment(models.TextChoices):
        PRODUCTION = "production"
        STAGING = "staging"
        DEVELOPMENT = "development"

    application = models.ForeignKey(
        Application, on_delete=models.PROTECT, related_name="deployments"
    )
    name = models.SlugField(max_length=64)
    environment = models.CharField(
        max_length=16, choices=Environment.choices, default=Environment.PRODUCTION
    )
    endpoint_url = models.URLField(max_length=500, blank=True)
    desired_replicas = models.PositiveSmallIntegerField(default=1)
    heartbeat_timeout = models.DurationField(default=settings.DEFAULT_HEARTBEAT_TIMEOUT)
    probe_interval = models.DurationField(
        null=True,
        blank=True,
        default=settings.DEFAULT_PROBE_INTERVAL,
        help_text="How often golden-input probes run; empty disables scheduled probes.",
    )
    next_probe_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["application_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "name"], name="%(app_label)s_%(class)s_unique_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application.slug}/{self.name}"


class TrafficAllocation(models.Model):
    """A version's share of a deployment's traffic over [valid_from, valid_to).

    Changing an allocation closes the current rows and opens new ones, so the split in force
    at any past instant stays answerable (feedback attribution, traffic-over-time charts).
    """

    class Role(models.TextChoices):
        CONTROL = "control"
        TREATMENT = "treatment"
        CANARY = "canary"
        SHADOW = "shadow"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="allocations")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="allocations"
    )
    weight = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Percent of live traffic; shadow rows carry 0 and get a copy.",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CONTROL)
    valid_from = models.DateTimeField(db_index=True)
    valid_to = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["deployment_id", "-weight", "model_version_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "model_version"],
                condition=Q(valid_to__isnull=True),
                name="%(app_label)s_%(class)s_one_current_per_version",
            ),
            models.CheckConstraint(
                condition=Q(weight__lte=100), name="%(app_label)s_%(class)s_weight_le_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.deployment} {self.model_version} {self.weight}% ({self.role})"


class Replica(TimestampedModel):
    """One instance behind a deployment's load balancer, as it last reported itself."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replicas")
    instance_id = models.CharField(max_length=200)
    host = models.CharField(max_length=255, blank=True)
    url = models.URLField(max_length=500, blank=True, help_text="Where probes reach it.")
    reported_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reported_sha256 = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_verdict = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["deployment_id", "instance_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "instance_id"], name="%(app_label)s_%(class)s_unique_instance"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.deployment}:{self.instance_id}"


# --- Rollouts ---


class Rollout(TimestampedModel):
    """A controlled change of a deployment from a baseline version to a candidate."""

    class Strategy(models.TextChoices):
        AB_TEST = "ab_test"
        CANARY = "canary"
        GRADUAL = "gradual"
        SHADOW = "shadow"

    class State(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        PROMOTED = "promoted"
        ROLLED_BACK = "rolled_back"
        ABORTED = "aborted"

    class OnFailure(models.TextChoices):
        PAUSE = "pause"
        ROLLBACK = "rollback"

    ACTIVE_STATES = (State.RUNNING, State.PAUSED)

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="rollouts")
    strategy = models.CharField(max_length=16, choices=Strategy.choices)
    baseline_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    candidate_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    steps = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"percent": 5, "min_duration_s": 3600, "min_sample": 1000}]',
    )
    current_step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    guardrails = models.JSONField(
        default=list, blank=True, help_text='[{"metric": "conversion_rate", "max_drop": 0.05}]'
    )
    on_failure = models.CharField(max_length=16, choices=OnFailure.choices, default=OnFailure.PAUSE)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment"],
                condition=Q(state__in=["running", "paused"]),
                name="%(app_label)s_%(class)s_one_active_per_deployment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.strategy} {self.deployment} → {self.candidate_version}"

    @property
    def current_percent(self) -> int | None:
        if not self.steps or self.current_step >= len(self.steps):
            return None
        return int(self.steps[self.current_step].get("percent", 0))


# --- Audit ---


class AuditEvent(models.Model):
    """Who changed what, when and why, with the state before and after."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="Username, token name or 'system'.")
    kind = models.CharField(max_length=64, db_index=True, help_text="e.g. version.registered")
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["application", "-at"], name="registry_audit_app_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.kind} {self.target_repr}"


# --- API tokens ---


class ApiToken(models.Model):
    """A scoped bearer token; only its sha256 is stored, the secret is shown once."""

    class Scope(models.TextChoices):
        READ = "read"
        FEEDBACK_WRITE = "feedback:write"
        REGISTRY_WRITE = "registry:write"
        REPLICA_WRITE = "replica:write"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


# --- Replica consistency ---


class GoldenSet(TimestampedModel):
    """Named inputs for one registered model, sent to every replica to compare their answers.

    `inputs` is a list of {"name": str, "input": <any JSON>, "expected": <any JSON>?}; the
    rule says when two answers (or an answer and the expected output) count as the same.
    """

    class Rule(models.TextChoices):
        EXACT = "exact"  # labels, ids: JSON equality
        TOLERANCE = "tolerance"  # scores: numbers within abs/rel tolerance, the rest equal
        TOP_K = "top_k"  # recommendation lists: overlap of the first k items

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.CASCADE, related_name="golden_sets"
    )
    name = models.CharField(max_length=100, validators=[slug_validator])
    description = models.TextField(blank=True)
    rule = models.CharField(max_length=16, choices=Rule.choices, default=Rule.EXACT)
    abs_tolerance = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    rel_tolerance = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    top_k = models.PositiveSmallIntegerField(null=True, blank=True)
    min_overlap = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="top_k rule: share of the first k items two answers must have in common.",
    )
    inputs = models.JSONField(default=list)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["registered_model_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "name"], name="%(app_label)s_%(class)s_unique_name"
            ),
            models.CheckConstraint(
                condition=Q(min_overlap__gte=0) & Q(min_overlap__lte=1),
                name="%(app_label)s_%(class)s_overlap_is_share",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name}/{self.name}"


class ConsistencyCheck(models.Model):
    """One probe run of a deployment: golden inputs sent to every replica, answers compared."""

    class Outcome(models.TextChoices):
        CONSISTENT = "consistent"
        INCONSISTENT = "inconsistent"  # a replica diverges or serves an unallocated artifact
        INCOMPLETE = "incomplete"  # no disagreement, but some replicas did not answer
        SKIPPED = "skipped"  # nothing to compare: no probe-able replica or no golden input

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        MANUAL = "manual"

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="consistency_checks"
    )
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULE)
    triggered_by = models.CharField(max_length=150, blank=True)
    inputs_sent = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, help_text="Replicas per verdict.")
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["deployment", "-started_at"], name="registry_check_dep_started"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment} {self.started_at:%Y-%m-%d %H:%M} {self.outcome}"


class ReplicaProbeResult(models.Model):
    """What one replica answered during one consistency check."""

    class Verdict(models.TextChoices):
        CONSISTENT = "consistent"
        DIVERGENT = "divergent"  # answered, but differently from the reference
        MISMATCHED = "mismatched"  # reports an artifact no current allocation names
        UNREACHABLE = "unreachable"  # connection refused, DNS, no url
        TIMEOUT = "timeout"
        ERROR = "error"  # HTTP status other than 2xx
        BAD_RESPONSE = "bad_response"  # 2xx but not the JSON the contract asks for

    BAD_VERDICTS = (Verdict.DIVERGENT, Verdict.MISMATCHED)
    FAULT_VERDICTS = (Verdict.UNREACHABLE, Verdict.TIMEOUT, Verdict.ERROR, Verdict.BAD_RESPONSE)

    consistency_check = models.ForeignKey(
        ConsistencyCheck, on_delete=models.CASCADE, related_name="results"
    )
    replica = models.ForeignKey(Replica, on_delete=models.CASCADE, related_name="probe_results")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Slowest answer of the run.")
    answered = models.PositiveIntegerField(default=0)
    reported_sha256 = models.CharField(max_length=64, blank=True)
    reported_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first_difference = models.JSONField(
        null=True, blank=True, help_text='{"input": name, "expected": ..., "got": ...}'
    )
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["consistency_check_id", "replica_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["consistency_check", "replica"],
                name="%(app_label)s_%(class)s_one_per_check",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.replica} {self.verdict}"
