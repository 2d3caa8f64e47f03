"""occurred_at: a BRIN index on PostgreSQL instead of a btree; a btree elsewhere.

The btree took one random insert per event, a large part of the database's cost of ingest.
Events arrive roughly in the order they occurred, so a BRIN index (a few pages summarising
block ranges, no per-row entry) serves what needs occurred_at — the retention purge and the
label join's lookback bound — at almost no cost per insert. The index is made here by SQL,
so Django's model state carries none.
"""

from django.db import migrations, models

INDEX = "feedback_event_occurred_at"


def create_index(apps, schema_editor):
    method = "USING brin " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"CREATE INDEX {INDEX} ON feedback_feedbackevent {method}(occurred_at)")


def drop_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("feedback", "0005_ingestbatch_raw_lz4")]

    operations = [
        migrations.AlterField(
            model_name="feedbackevent",
            name="occurred_at",
            field=models.DateTimeField(),
        ),
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
