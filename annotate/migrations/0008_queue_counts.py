"""The kept pending-queue count of each project (``QueueCounts``, services/queue_counts.py), counted
once for the projects that exist already: one grouped count over the pending entries."""

import django.db.models.deletion
from django.db import migrations, models


def backfill(apps, schema_editor):
    Project = apps.get_model("annotate", "Project")
    QueueEntry = apps.get_model("annotate", "QueueEntry")
    QueueCounts = apps.get_model("annotate", "QueueCounts")
    pending = dict(QueueEntry.objects.filter(state="pending").order_by().values("project_id")
                   .annotate(n=models.Count("id")).values_list("project_id", "n"))
    QueueCounts.objects.bulk_create(
        [QueueCounts(project_id=pk, pending=pending.get(pk, 0)) for pk in Project.objects.values_list("pk", flat=True)],
        batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('annotate', '0007_audit_rate_help'),
    ]

    operations = [
        migrations.CreateModel(
            name='QueueCounts',
            fields=[
                ('project', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='queue_counts', serialize=False, to='annotate.project')),
                ('pending', models.BigIntegerField(default=0, help_text="Queue entries in the state 'pending'.")),
            ],
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
