"""A live demo: realistic feedback and heartbeats sent through the PUBLIC API of a running server.

`python manage.py simulate` (started by `make run`) makes the dashboard move:
- every tick, per application and serving arm: impressions in proportion to the arm's traffic
  weight, clicks, conversions, bad-recommendation reports, and labelled predictions whose
  accuracy follows the version's offline accuracy;
- one candidate arm (the first canary / treatment in the fleet, or --degrade APP) converts
  35 % worse and draws three times the bad-recommendation reports, so its rollout analysis
  and alert rules have something to find, and a product manager files a problem report on
  it now and then;
- heartbeats for every known replica, with the artifact it already reports, except one
  replica that "drifts" to an unallocated artifact after a minute.

It only speaks HTTP (urllib) with tokens of the demo users, exactly as a product backend and
replica sidecars would; the database is touched once, to create those short-lived tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

BASE_CONVERSION = 0.06
BASE_CLICK = 0.18
BASE_BAD = 0.004
DEGRADE_CONVERSION = 0.65  # the degraded candidate converts 35 % worse
DEGRADE_BAD = 3.0
DRIFT_AFTER_S = 60.0
REPORT_EVERY_TICKS = 60  # one problem report about every five minutes at the default interval


@dataclass
class Arm:
    application: str
    deployment_id: int
    role: str
    model: str
    version: int
    weight: int
    offline_accuracy: float | None
    degraded: bool = False


@dataclass
class Stats:
    ticks: int = 0
    events: int = 0
    heartbeats: int = 0
    reports: int = 0
    errors: int = 0
    drifting: str = ""
    degraded: str = ""
    last_error: str = ""
    batches: list[int] = field(default_factory=list)


class Api:
    """Bearer-token JSON calls; failures are counted and logged, never fatal (servers restart)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(  # noqa: S310 - our own server
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "modelops-simulate/1",
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None


class Simulator:
    def __init__(
        self,
        api: Api,
        *,
        read_token: str,
        feedback_token: str,
        replica_token: str,
        rate: float = 200.0,
        degrade: str | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.read_token = read_token
        self.feedback_token = feedback_token
        self.replica_token = replica_token
        self.rate = rate  # impressions per application per tick at 100 % weight
        self.degrade = degrade
        self.rng = random.Random(seed)
        self.clock = clock
        self.started = clock()
        self.stats = Stats()
        self.arms: list[Arm] = []
        self.replicas: list[dict[str, Any]] = []
        self.drift_replica: dict[str, Any] | None = None

    # --- discovery (again every few ticks: rollouts change the split) ---

    def discover(self) -> None:
        fleet = self.api.call("GET", "/api/v1/status", self.read_token)
        apps = fleet.get("applications", fleet) if isinstance(fleet, dict) else fleet
        arms: list[Arm] = []
        for app in apps:
            slug = app["application"]["slug"]
            for d in app["deployments"]:
                for v in d["versions"]:
                    if v["weight"] <= 0 or v["role"] == "shadow":
                        continue
                    arms.append(
                        Arm(
                            application=slug,
                            deployment_id=d.get("id") or 0,
                            role=v["role"],
                            model=v["model"],
                            version=v["version"],
                            weight=v["weight"],
                            offline_accuracy=v["offline_accuracy"],
                        )
                    )
        candidates = [a for a in arms if a.role in ("canary", "treatment")]
        if self.degrade:
            candidates = [a for a in candidates if a.application == self.degrade] or candidates
        if candidates:
            target = candidates[0]
            target.degraded = True
            self.stats.degraded = f"{target.application} {target.model}:{target.version}"
        self.arms = arms
        page = self.api.call("GET", "/api/v1/replicas/?page_size=500", self.read_token)
        self.replicas = page.get("results", []) if isinstance(page, dict) else page
        if self.drift_replica is None and self.replicas:
            self.drift_replica = sorted(self.replicas, key=lambda r: r["id"])[0]

    # --- one tick ---

    def events_for(self, arm: Arm, now: datetime) -> list[dict[str, Any]]:
        share = arm.weight / 100
        impressions = max(int(self.rng.gauss(self.rate * share, (self.rate * share) ** 0.5)), 0)
        conversion = BASE_CONVERSION * (DEGRADE_CONVERSION if arm.degraded else 1.0)
        bad = BASE_BAD * (DEGRADE_BAD if arm.degraded else 1.0)
        accuracy = arm.offline_accuracy if arm.offline_accuracy is not None else 0.85
        base = {
            "application": arm.application,
            "model_version": f"{arm.model}:{arm.version}",
            "segment": self.rng.choice(["web", "ios", "android"]),
        }
        out = []
        for _ in range(impressions):
            at = (now - timedelta(seconds=self.rng.uniform(0, 5))).isoformat()
            request_id = uuid.uuid4().hex[:16]

            def event(kind: str, _at: str = at, _rid: str = request_id, **extra: Any) -> None:
                out.append(
                    {
                        **base,
                        "event_id": str(uuid.uuid4()),
                        "occurred_at": _at,
                        "kind": kind,
                        "request_id": _rid,
                        **extra,
                    }  # fmt: skip
                )

            event("impression")
            if self.rng.random() < BASE_CLICK:
                event("click")
            if self.rng.random() < conversion:
                event("conversion", value=round(self.rng.lognormvariate(3.5, 0.6), 2))
            if self.rng.random() < bad:
                event("bad_recommendation")
            if self.rng.random() < 0.1:  # a label arrives for one prediction in ten
                label = self.rng.choice(["a", "b", "c"])
                right = self.rng.random() < accuracy - (0.04 if arm.degraded else 0)
                wrong = self.rng.choice([x for x in "abc" if x != label])
                event("label", prediction=label if right else wrong, label=label)
        return out

    def send_feedback(self) -> None:
        now = datetime.now(UTC)
        events = [e for arm in self.arms for e in self.events_for(arm, now)]
        for start in range(0, len(events), 5000):
            chunk = events[start : start + 5000]
            batch = self.api.call("POST", "/api/v1/feedback/", self.feedback_token, chunk)
            self.stats.events += len(chunk)
            self.stats.batches = [*self.stats.batches[-20:], batch["id"]]

    def send_heartbeats(self) -> None:
        drift = self.clock() - self.started >= DRIFT_AFTER_S
        for r in self.replicas:
            body: dict[str, Any] = {"deployment": r["deployment"], "instance_id": r["instance_id"]}
            if drift and self.drift_replica is not None and r["id"] == self.drift_replica["id"]:
                body["sha256"] = hashlib.sha256(f"drift:{r['instance_id']}".encode()).hexdigest()
                self.stats.drifting = f"{r['application']} {r['instance_id']}"
            elif r.get("reported_sha256"):
                body["sha256"] = r["reported_sha256"]
            self.api.call("POST", "/api/v1/replicas/heartbeat", self.replica_token, body)
            self.stats.heartbeats += 1

    def file_report(self) -> None:
        """A product manager files a problem report on the degraded candidate (its users
        see worse recommendations), with a few request ids as examples."""
        arm = next((a for a in self.arms if a.degraded), None)
        if arm is None:
            return
        self.api.call(
            "POST",
            "/api/v1/feedback-reports/",
            self.feedback_token,
            {
                "application": arm.application,
                "model_version": f"{arm.model}:{arm.version}",
                "kind": self.rng.choice(["bad_recommendation", "conversion_drop"]),
                "severity": "high",
                "title": f"Users on the {arm.role} arm complain about irrelevant results",
                "description": "Filed by the live demo (manage.py simulate).",
                "example_request_ids": [uuid.uuid4().hex[:16] for _ in range(3)],
            },
        )
        self.stats.reports += 1

    def tick(self) -> None:
        """One round; an API failure is logged and the next tick tries again."""
        try:
            if self.stats.ticks % 12 == 0 or not self.arms:
                self.discover()
            self.send_feedback()
            if self.stats.ticks % 3 == 0:
                self.send_heartbeats()
            if self.stats.ticks % REPORT_EVERY_TICKS == REPORT_EVERY_TICKS - 1:
                self.file_report()
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            self.stats.errors += 1
            self.stats.last_error = str(getattr(exc, "reason", exc))[:200]
            log.warning("simulate: %s", self.stats.last_error)
        self.stats.ticks += 1
