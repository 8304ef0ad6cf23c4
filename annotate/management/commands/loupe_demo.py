"""``python manage.py loupe_demo``: build the digits demo project and its first round (idempotent)."""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotate.models import Round
from annotate.services.demo import DEMO_NAME, demo_build
from annotate.services.rounds import round_execute, round_request


class Command(BaseCommand):
    help = "Build the handwritten-digits demo project (1,797 images, 10 classes) and its first round."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=DEMO_NAME)
        parser.add_argument("--size", type=int, default=128, help="side of the upscaled PNGs in pixels")
        parser.add_argument("--limit", type=int, default=None, help="only the first N digits (for tests)")
        parser.add_argument("--batch-size", type=int, default=20)
        parser.add_argument("--refill-threshold", type=int, default=10)

    def handle(self, *args, **opts):
        if opts["verbosity"] < 1:  # make run: the server's banner comes first, not the first round's log
            logging.getLogger("annotate").setLevel(logging.WARNING)
        try:
            res = demo_build(name=opts["name"], size=opts["size"], limit=opts["limit"],
                             batch_size=opts["batch_size"], refill_threshold=opts["refill_threshold"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        project = res.project
        say = self.stdout.write if opts["verbosity"] >= 1 else (lambda *a, **k: None)
        if res.created_items or res.wrote_embeddings:
            say(f"project {project.pk} {project.name!r}: added {res.created_items} items"
                              f"{', wrote embeddings' if res.wrote_embeddings else ''}")
        else:
            say(f"project {project.pk} {project.name!r} is complete; nothing changed")
        if not Round.objects.filter(project=project).exists():
            rnd = round_request(project=project, reason="initial")
            if rnd is not None and settings.LOUPE_EMBEDDED_WORKER:
                # The memory broker lives in this process only: run the first round here.
                round_execute(round_id=rnd.pk)
                rnd.refresh_from_db()
            say(f"round {rnd.number}: {rnd.status}")
