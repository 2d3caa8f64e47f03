"""Submit a CSV, JSONL or JSON file of feedback events from the command line.

    python manage.py ingest_feedback_file events.csv [--application recommender] [--wait]

The file takes the same path as an upload: one stored batch, expanded by the `ingest` queue
(or here and now with --inline, when no worker runs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.forms import UPLOAD_FORMATS
from feedback.models import IngestBatch
from feedback.services import EnvelopeError, ingest_feedback_batch, submit_batch
from registry.models import Application
from registry.roles import Actor


class Command(BaseCommand):
    help = "Submit a file of feedback events as one ingest batch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--application", help="Slug for rows that name no application.")
        parser.add_argument("--inline", action="store_true", help="Expand it in this process.")
        parser.add_argument("--wait", action="store_true", help="Wait until a worker is done.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        fmt = UPLOAD_FORMATS.get(path.suffix.lstrip(".").lower())
        if fmt is None:
            raise CommandError("the file must end in .csv, .jsonl, .ndjson or .json")
        app = None
        if options["application"]:
            app = Application.objects.filter(slug=options["application"]).first()
            if app is None:
                raise CommandError(f"unknown application {options['application']!r}")
        try:
            batch, _ = submit_batch(
                actor=Actor.system("manage.py ingest_feedback_file"), raw=path.read_bytes(),
                fmt=fmt, source=IngestBatch.Source.UPLOAD, filename=path.name,
                default_application=app,
            )  # fmt: skip
        except EnvelopeError as exc:
            raise CommandError(exc.message) from exc
        if options["inline"]:
            ingest_feedback_batch(batch_id=batch.pk)
        while options["wait"] and not options["inline"]:
            batch.refresh_from_db(fields=["state"])
            if not batch.is_open:
                break
            time.sleep(0.5)
        batch.refresh_from_db()
        self.stdout.write(
            f"batch {batch.pk}: {batch.state}, accepted {batch.accepted}, "
            f"duplicate {batch.duplicate}, rejected {batch.rejected}"
        )
        for error in batch.errors[:20]:
            self.stdout.write(f"  row {error['index'] + 1}: {error['field']}: {error['message']}")
