"""``python manage.py loupe_recount``: check the kept pending-queue counts against fresh counts.

    manage.py loupe_recount            # report the projects whose count drifted, and repair them
    manage.py loupe_recount --check    # report only; exit status 1 when any drifted

The periodic sweep does the same every ``LOUPE_RECOUNT_SECONDS`` (services/queue_counts.py).
"""
from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from annotate.services.queue_counts import queue_counts_check


class Command(BaseCommand):
    help = "Check each project's kept pending-queue count against a fresh count; repair any that drifted."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="report only, repair nothing (exit 1 on drift)")

    def handle(self, *args, **opts):
        drift = queue_counts_check(repair=not opts["check"])
        for pk, (kept, counted) in drift.items():
            self.stdout.write(f"project {pk}: kept {kept if kept is not None else '-'}, counted {counted}"
                              f"{'' if opts['check'] else ' (repaired)'}")
        if not drift:
            self.stdout.write("all pending counts agree with the queue")
        if drift and opts["check"]:
            sys.exit(1)
