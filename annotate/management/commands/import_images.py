"""``python manage.py import_images PROJECT SOURCE``: import a folder or zip of images (same service as admin).

Runs the import in this process (a Job row records it like a background import) and prints the
skipped files with their reasons.  Exit status 1 when the import is rejected.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotate.models import Job, Project
from annotate.services import imports


class Command(BaseCommand):
    help = "Import images (folder or zip; optional manifest, labels and embeddings) into a project."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or name")
        parser.add_argument("source", nargs="?", default="", help="folder or .zip of images")
        parser.add_argument("--manifest", default="", help="CSV/JSON manifest: path, file:// or http(s):// URL")
        parser.add_argument("--embeddings", default="", help=".npy matrix, one row per manifest row / image")
        parser.add_argument("--class-folders", action="store_true", help="read <class>/<file> as the label")
        parser.add_argument("--labels-as", choices=imports.LABELS_AS, default="ground_truth")
        parser.add_argument("--create", action="store_true", help="create the project if it does not exist")
        parser.add_argument("--no-embed", action="store_true", help="do not queue the embedding job afterwards")

    def handle(self, *args, **o):
        project = _project(o["project"], create=o["create"])
        options = {"source": o["source"], "manifest": o["manifest"], "embeddings": o["embeddings"],
                   "class_folders": o["class_folders"], "labels_as": o["labels_as"]}
        try:
            opts = imports.ImportOptions.from_dict(options)
        except imports.ImportRejected as exc:
            raise CommandError(str(exc)) from None
        job = Job.objects.create(project=project, kind=Job.Kind.IMPORT, params=opts.as_dict())
        if o["no_embed"]:
            try:
                res = imports.import_images(project=project, options=opts, job_id=str(job.pk))
            except imports.ImportRejected as exc:
                raise CommandError(str(exc)) from None
            result = res.as_dict()
        else:
            job = imports.import_execute(job_id=str(job.pk))
            if job.status == Job.Status.FAILED:
                raise CommandError(job.error)
            result = job.result
        for s in result.get("skipped", []):
            self.stderr.write(f"skipped {s['name']}: {s['reason']}")
        self.stdout.write(self.style.SUCCESS(
            f"imported {result['imported']} images into {project.name!r} (id {project.pk}); "
            f"{result['already_present']} already present, {result['skipped_count']} skipped"))
        if result.get("embedding_job"):
            self.stdout.write(f"embedding job {result['embedding_job']} queued (run embed_project to compute now)")


def _project(ref: str, *, create: bool = False) -> Project:
    qs = Project.objects.filter(pk=int(ref)) if ref.isdigit() else Project.objects.filter(name=ref)
    project = qs.first()
    if project is None:
        if create and not ref.isdigit():
            return Project.objects.create(name=ref)
        raise CommandError(f"no project {ref!r} (give an id or a name; --create makes one by name)")
    return project
