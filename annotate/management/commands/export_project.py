"""``python manage.py export_project PROJECT --format F --out FILE``: write an export (streamed)."""
from __future__ import annotations

import resource
import time
from pathlib import Path

from django.core.management.base import BaseCommand

from annotate.services.exports import FORMATS, export_write

from .import_images import _project


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own address space.
    (``ru_maxrss`` would also count the parent's memory at fork time: Linux carries the old address
    space's high-water mark across ``exec``.)  Elsewhere ``ru_maxrss`` (KiB on Linux/BSD).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Command(BaseCommand):
    help = "Export a project's labels: " + ", ".join(FORMATS)

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--format", choices=sorted(FORMATS), required=True)
        parser.add_argument("--out", required=True, help="output file")
        parser.add_argument("--predictions", action="store_true", help="add model predictions for unlabeled items")

    def handle(self, *args, **o):
        project = _project(o["project"])
        t0 = time.perf_counter()
        n = export_write(project=project, fmt=o["format"], path=Path(o["out"]), predictions=o["predictions"])
        peak_mib = peak_rss_mib()
        self.stdout.write(self.style.SUCCESS(
            f"wrote {n} records to {o['out']} ({Path(o['out']).stat().st_size} bytes) in "
            f"{time.perf_counter() - t0:.1f} s; peak RSS of this process {peak_mib:.0f} MiB"))
