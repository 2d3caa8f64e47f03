"""`manage.py probe_replicas shop/prod` runs one golden-input probe now and prints a table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.models import ConsistencyCheck
from registry.replica_selectors import consistency_check_list, deployment_by_ref
from registry.roles import Actor
from registry.services.probes import ProbeOptions, probe_deployment


class Command(BaseCommand):
    help = "Probe a deployment's replicas with golden inputs now and print their verdicts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("deployment", help='Deployment id or "application-slug/name".')
        parser.add_argument("--timeout", type=float, default=0.0, help="Seconds per request.")
        parser.add_argument("--concurrency", type=int, default=0, help="Replicas at once.")

    def handle(self, *args: Any, **options: Any) -> None:
        deployment = deployment_by_ref(options["deployment"])
        if deployment is None:
            raise CommandError(f"no deployment {options['deployment']!r}")
        check = probe_deployment(
            deployment=deployment,
            actor=Actor.system("manage.py probe_replicas"),
            trigger=ConsistencyCheck.Trigger.MANUAL,
            options=ProbeOptions(timeout=options["timeout"], max_workers=options["concurrency"]),
        )
        check = consistency_check_list().get(pk=check.pk)
        self.stdout.write(self._table(check))
        self.stdout.write(
            f"\n{deployment}: {check.outcome} ({check.inputs_sent} answers) {check.note}".rstrip()
        )
        if check.outcome == ConsistencyCheck.Outcome.INCONSISTENT:
            raise CommandError(f"replicas of {deployment} are inconsistent", returncode=2)

    @staticmethod
    def _table(check: ConsistencyCheck) -> str:
        rows = [("REPLICA", "HOST", "VERDICT", "LATENCY", "REPORTED VERSION", "DETAIL")]
        for r in check.result_list:
            mv = r.reported_version
            version = f"{mv.registered_model.name} v{mv.version}" if mv else "?"
            if r.reported_sha256:
                version += f" ({r.reported_sha256[:12]})"
            latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-"
            detail = r.detail
            if r.first_difference:
                detail = detail or f"differs on {r.first_difference.get('input')}"
            rows.append(
                (r.replica.instance_id, r.replica.host, r.verdict, latency, version, detail)
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
