"""``python manage.py loupe_recount``: check the kept pending-queue and label counts against fresh counts.

    manage.py loupe_recount            # report the projects whose count drifted, and repair them
    manage.py loupe_recount --check    # report only; exit status 1 when any drifted

The periodic sweep does the same every ``LOUPE_RECOUNT_SECONDS`` (services/queue_counts.py,
services/label_counts.py).
"""
from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from annotate.services.label_counts import label_counts_check
from annotate.services.queue_counts import queue_counts_check


class Command(BaseCommand):
    help = "Check each project's kept pending-queue and label counts against fresh counts; repair any that drifted."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="report only, repair nothing (exit 1 on drift)")

    def handle(self, *args, **opts):
        repair = not opts["check"]
        done = "" if opts["check"] else " (repaired)"
        queue = queue_counts_check(repair=repair)
        for pk, (kept, counted) in queue.items():
            shown = "-" if kept is None else kept
            self.stdout.write(f"project {pk}: pending kept {shown}, counted {counted}{done}")
        labels = label_counts_check(repair=repair)
        for pk, what in labels.items():
            self.stdout.write(f"project {pk}: {what}{done}")
        if not queue and not labels:
            self.stdout.write("all kept counts agree with the tables")
        if (queue or labels) and opts["check"]:
            sys.exit(1)
