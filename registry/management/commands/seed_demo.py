"""`python manage.py seed_demo`: build the demo fleet once and print the demo logins."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from registry.demo import seed_demo


class Command(BaseCommand):
    help = "Build the demo fleet (idempotent: a second run changes nothing) and print the logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (creates users with publicly known passwords).",
        )

    def handle(self, *args: Any, force: bool = False, **options: Any) -> None:
        if not settings.DEBUG and not force:
            # Demo users have published passwords: never create them on a production site by
            # accident. Not an error, so `make run` with DEBUG=0 still starts.
            self.stderr.write(
                self.style.WARNING("DEBUG is off: demo fleet not seeded (use --force to seed).")
            )
            return
        started = time.monotonic()
        result = seed_demo()
        elapsed = time.monotonic() - started
        if result.created:
            made = ", ".join(f"{n} {kind}" for kind, n in result.created.items())
            self.stdout.write(f"Demo fleet seeded in {elapsed:.1f} s: {made}.")
        else:
            self.stdout.write("Demo fleet already present: nothing to do.")
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Demo logins (http://127.0.0.1:8000/login/):"))
        for username, (password, role, what) in result.users.items():
            self.stdout.write(f"  {username:<8} / {password:<13}  {role:<9}  {what}")
