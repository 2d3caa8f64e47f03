import hashlib
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from registry.models import (
    Application,
    Deployment,
    ModelVersion,
    RegisteredModel,
    Replica,
    Rollout,
    TrafficAllocation,
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        for name in extracted or ():
            self.groups.add(Group.objects.get_or_create(name=name)[0])


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Application

    slug = factory.Sequence(lambda n: f"app-{n}")
    name = factory.LazyAttribute(lambda a: a.slug.replace("-", " ").title())
    team = "growth"
    max_model_age = timedelta(hours=24)


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel

    name = factory.Sequence(lambda n: f"model-{n}")
    team = "ml"


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    registered_model = factory.SubFactory(RegisteredModelFactory)
    version = factory.Sequence(lambda n: n + 1)
    artifact_uri = factory.LazyAttribute(
        lambda v: f"s3://models/{v.registered_model.name}/{v.version}/model.onnx"
    )
    sha256 = factory.Sequence(lambda n: hashlib.sha256(f"artifact-{n}".encode()).hexdigest())
    size_bytes = 10_000_000
    memory_bytes = 40_000_000
    format = ModelVersion.Format.ONNX
    framework = "pytorch"
    trained_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=6))
    metrics = factory.LazyFunction(lambda: {"accuracy": 0.91, "auc": 0.95})


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deployment

    application = factory.SubFactory(ApplicationFactory)
    name = factory.Sequence(lambda n: f"prod-{n}")
    desired_replicas = 3


class TrafficAllocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrafficAllocation

    deployment = factory.SubFactory(DeploymentFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    weight = 100
    role = TrafficAllocation.Role.CONTROL
    valid_from = factory.LazyFunction(lambda: timezone.now() - timedelta(days=1))


class ReplicaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Replica

    deployment = factory.SubFactory(DeploymentFactory)
    instance_id = factory.Sequence(lambda n: f"pod-{n}")
    host = factory.Sequence(lambda n: f"10.0.0.{n % 250}")
    last_heartbeat_at = factory.LazyFunction(timezone.now)


class RolloutFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rollout

    deployment = factory.SubFactory(DeploymentFactory)
    strategy = Rollout.Strategy.CANARY
    baseline_version = factory.SubFactory(ModelVersionFactory)
    candidate_version = factory.LazyAttribute(
        lambda r: ModelVersionFactory(registered_model=r.baseline_version.registered_model)
    )
    steps = factory.LazyFunction(
        lambda: [{"percent": 10, "min_duration_s": 3600, "min_sample": 100}]
    )
