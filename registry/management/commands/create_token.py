"""`manage.py create_token USERNAME --scope read --scope feedback:write` prints a new API token.

Only the token goes to stdout, so scripts can capture it: TOKEN=$(manage.py create_token ...).
It is shown this once; only its hash is stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.exceptions import InvalidInput
from registry.models import ApiToken
from registry.roles import Actor
from registry.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (only the token) on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            default=[],
            metavar="SCOPE",
            help=f"Repeatable; one of {', '.join(ApiToken.Scope.values)}. Default: read.",
        )
        parser.add_argument("--name", default="cli", help="A label to recognise the token by.")
        parser.add_argument(
            "--days", type=int, default=None, help="Lifetime in days (default: API_TOKEN_TTL_DAYS)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None or not user.is_active:
            raise CommandError(f"no active user {options['username']!r}")
        scopes = options["scopes"] or [ApiToken.Scope.READ]
        days = options["days"]
        if days is not None and not 0 < days <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        try:
            _, raw = create_api_token(
                actor=Actor.system("manage.py create_token"),
                user=user,
                name=options["name"][:100],
                scopes=scopes,
                ttl=timedelta(days=days) if days else None,
            )
        except InvalidInput as exc:
            raise CommandError(
                f"{exc.message} (known: {', '.join(ApiToken.Scope.values)})"
            ) from exc
        self.stdout.write(raw)
