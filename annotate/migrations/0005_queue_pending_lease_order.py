"""The pending queue in the lease's order (services/queue.py: newest round first, entries without a
round last, then rank, then id), so a lease reads its first entries off the index instead of sorting
the whole pending queue: 10k pending entries after a round of a million-item project were sorted on
disk at every lease (130 ms; docs/million-items.md).

Written per database because SQLite cannot say NULLS LAST in an index; there NULL sorts below every
value, so a plain DESC already puts entries without a round last, as the query's ORDER BY does.  Not
in the model's Meta for the same reason (Django would emit the PostgreSQL form everywhere).
"""
from django.db import migrations

NAME = "queue_pending_lease_order"


def create(apps, schema_editor):
    table = schema_editor.quote_name("annotate_queueentry")
    nulls = " NULLS LAST" if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f'CREATE INDEX "{NAME}" ON {table} ("project_id", "round_id" DESC{nulls}, "rank", "id") '
        "WHERE \"state\" = 'pending'")


def drop(apps, schema_editor):
    schema_editor.execute(f'DROP INDEX IF EXISTS "{NAME}"')


class Migration(migrations.Migration):

    dependencies = [
        ('annotate', '0004_project_counts'),
    ]

    operations = [migrations.RunPython(create, drop)]
