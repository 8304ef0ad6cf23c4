"""The kept label counts (``LabelCounts``, services/label_counts.py), counted once for the projects that
exist already: two grouped counts over the current label rows."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

LABEL_ACTIONS = ("label", "correct")  # selectors_labels.LABEL_ACTIONS when this was written


def backfill(apps, schema_editor):
    Project = apps.get_model("annotate", "Project")
    Annotation = apps.get_model("annotate", "Annotation")
    LabelCounts = apps.get_model("annotate", "LabelCounts")
    current = Annotation.objects.filter(is_current=True, action__in=LABEL_ACTIONS).order_by()
    labeled = dict(current.values("item__project_id").annotate(n=models.Count("item_id", distinct=True))
                   .values_list("item__project_id", "n"))
    rows = [LabelCounts(project_id=pk, annotator_id=None, labels=labeled.get(pk, 0))
            for pk in Project.objects.values_list("pk", flat=True)]
    rows += [LabelCounts(project_id=r["item__project_id"], annotator_id=r["annotator_id"], labels=r["n"])
             for r in current.values("item__project_id", "annotator_id").annotate(n=models.Count("id"))]
    LabelCounts.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('annotate', '0009_audit_rate_default'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='LabelCounts',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('labels', models.BigIntegerField(default=0)),
                ('annotator', models.ForeignKey(blank=True, help_text="Empty: the project's labeled items.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='annotate.project')),
            ],
            options={
                'constraints': [models.UniqueConstraint(condition=models.Q(('annotator__isnull', False)), fields=('project', 'annotator'), name='label_counts_one_per_annotator'), models.UniqueConstraint(condition=models.Q(('annotator__isnull', True)), fields=('project',), name='label_counts_one_per_project')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
