"""`manage.py invalidate_caches`: drop every cached status body and remembered API token.

Every write through the application invalidates what it changes at once. Writes that bypass
it (psql, a restored backup, a data migration) are seen only when a cache entry reaches
STATUS_CACHE_MAX_AGE_S / API_TOKEN_CACHE_S; run this after such a write to see it at once.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from registry import status_generation
from registry.models import Application
from registry.services.tokens import forget_remembered_tokens


class Command(BaseCommand):
    help = "Drop every cached status body and remembered API token (after out-of-band writes)."

    def handle(self, *args: Any, **options: Any) -> None:
        ids = list(Application.objects.values_list("pk", flat=True))
        status_generation.bump_now(ids)
        forget_remembered_tokens()
        self.stdout.write(f"invalidated the status of {len(ids)} applications and all tokens")
