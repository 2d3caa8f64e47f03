"""`python manage.py simulate`: live feedback and heartbeats for the demo fleet (see
dashboard/simulation.py). Runs until interrupted, or for --duration seconds."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.simulation import Api, Simulator
from registry.roles import Actor
from registry.services import create_api_token, revoke_api_token


class Command(BaseCommand):
    help = "Send realistic feedback and replica heartbeats to a running server's public API."

    def add_arguments(self, parser: CommandParser) -> None:
        port = os.environ.get("PORT", "8000")
        parser.add_argument(
            "--url", default=os.environ.get("SIMULATE_URL", f"http://127.0.0.1:{port}")
        )
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
        parser.add_argument("--duration", type=float, default=0.0, help="stop after N s (0: never)")
        parser.add_argument(
            "--rate", type=float, default=200.0, help="impressions per app per tick"
        )
        parser.add_argument("--degrade", help="application whose candidate converts worse")
        parser.add_argument(
            "--wait", type=float, default=60.0, help="seconds to wait for the server"
        )
        parser.add_argument("--seed", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        users = {
            u.username: u
            for u in get_user_model().objects.filter(username__in=["devops", "product"])
        }
        if len(users) < 2:
            raise CommandError(
                "the demo users devops and product are missing: run `make seed` first"
            )
        actor = Actor.system("simulate")
        made = [
            create_api_token(
                actor=actor,
                user=users["product"],
                name="simulate: feedback",
                scopes=["read", "feedback:write"],
                ttl=timedelta(days=1),
            ),
            create_api_token(
                actor=actor,
                user=users["devops"],
                name="simulate: replicas",
                scopes=["read", "replica:write"],
                ttl=timedelta(days=1),
            ),
        ]
        api = Api(options["url"])
        self._wait_for(api, made[0][1], options["wait"])
        sim = Simulator(
            api,
            read_token=made[0][1],
            feedback_token=made[0][1],
            replica_token=made[1][1],
            rate=options["rate"],
            degrade=options["degrade"],
            seed=options["seed"],
        )
        self.stdout.write(
            f"simulate: sending to {options['url']} every {options['interval']}s (Ctrl-C stops)"
        )
        deadline = time.monotonic() + options["duration"] if options["duration"] else None
        try:
            while deadline is None or time.monotonic() < deadline:
                began = time.monotonic()
                sim.tick()
                s = sim.stats
                if s.ticks == 1 or s.ticks % 12 == 0:
                    self.stdout.write(
                        f"simulate: {s.ticks} ticks, {s.events} events, {s.heartbeats} heartbeats, "
                        f"{s.errors} errors; degraded {s.degraded or '-'}; "
                        f"drifting {s.drifting or '-'}"
                    )
                time.sleep(max(options["interval"] - (time.monotonic() - began), 0))
        except KeyboardInterrupt:
            pass
        finally:
            for token, _ in made:
                revoke_api_token(actor=actor, token=token, reason="simulate stopped")
        self.stdout.write(f"simulate: stopped after {sim.stats.events} events")

    def _wait_for(self, api: Api, token: str, seconds: float) -> None:
        """`make run` starts web and simulate together: wait until the API answers."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                api.call("GET", "/api/v1/status", token)
                return
            except Exception as exc:  # noqa: BLE001 - anything means "not up yet"
                if time.monotonic() > deadline:
                    raise CommandError(f"no API at {api.base_url}: {exc}") from exc
                time.sleep(1)
