"""``python manage.py embed_project PROJECT [--extractor NAME] [--param k=v ...]``: compute embeddings now."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from annotate.models import Job
from annotate.services import embeddings
from selection.extractors import extractor_names

from .import_images import _project


class Command(BaseCommand):
    help = "Compute a project's embeddings in this process (a new version; items point at their rows)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--extractor", choices=extractor_names(), default=None,
                            help="default: the project's extractor")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                            help="extractor parameter (repeatable); values are JSON or plain strings")

    def handle(self, *args, **o):
        project = _project(o["project"])
        params = None
        if o["param"] or o["extractor"]:
            params = {}
            for kv in o["param"]:
                if "=" not in kv:
                    raise CommandError(f"--param {kv!r} must look like name=value")
                k, v = kv.split("=", 1)
                try:
                    params[k] = json.loads(v)
                except json.JSONDecodeError:
                    params[k] = v
        try:
            name = o["extractor"] or project.extractor
            checked = embeddings.extractor_validate(name=name, params=params if params is not None
                                                    else project.extractor_params)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        job = Job.objects.create(project=project, kind=Job.Kind.EMBED, params={"extractor": name, "params": checked})
        job = embeddings.embedding_execute(job_id=str(job.pk))
        if job.status == Job.Status.FAILED:
            raise CommandError(job.error)
        self.stdout.write(self.style.SUCCESS(job.message))
