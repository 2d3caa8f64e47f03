import json

import pytest
from django.core.management import CommandError, call_command

from feedback.models import FeedbackEvent
from tests.factories.feedback import event


def test_ingest_feedback_file_inline_reports_counts(tmp_path, app_slug, capsys):
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(event(app_slug)) for _ in range(2)] + ['{"kind": "click"}']
    path.write_text("\n".join(lines))

    call_command("ingest_feedback_file", str(path), "--inline")

    out = capsys.readouterr().out
    assert "done, accepted 2, duplicate 0, rejected 1" in out
    assert FeedbackEvent.objects.count() == 2


def test_ingest_feedback_file_refuses_an_unknown_format(tmp_path):
    path = tmp_path / "events.xml"
    path.write_text("<events/>")

    with pytest.raises(CommandError):
        call_command("ingest_feedback_file", str(path))
