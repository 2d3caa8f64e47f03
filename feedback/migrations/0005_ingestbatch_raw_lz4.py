"""Store submissions' bytes with lz4 instead of pglz (PostgreSQL 14+ built with lz4).

pglz compressing each ~200 KB ingest body cost the database several ms of CPU per request,
and decompressing it again in the worker more; lz4 does both several times faster. Elsewhere,
or when the server lacks lz4, nothing changes.
"""

from django.db import migrations


def use_lz4(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
        if cursor.fetchone() is None:
            return
        cursor.execute("ALTER TABLE feedback_ingestbatch ALTER COLUMN raw SET COMPRESSION lz4")


def use_default(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql" and connection.pg_version >= 140000:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE feedback_ingestbatch ALTER COLUMN raw SET COMPRESSION DEFAULT"
            )


class Migration(migrations.Migration):
    dependencies = [("feedback", "0004_alertrule_stops_rollouts")]

    operations = [migrations.RunPython(use_lz4, use_default, elidable=False)]
