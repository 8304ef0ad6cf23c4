"""``python manage.py bench_export --items 100000``: peak memory and time of every export format.

Builds (once) a synthetic project with ``--items`` items (tiny PNG files, an embedding matrix, a
trained-head file for predictions) of which 80 % are labeled by three annotators, plus a small
reference project of ``--small`` items.  Each export then runs in a fresh ``manage.py
export_project`` subprocess, which reports its own peak resident set size (``ru_maxrss``); the
small project's numbers are the baseline (Django, NumPy, pyarrow loaded), so a bounded export shows
the same peak for both sizes.  Run it on a scratch database, e.g.::

    LOUPE_VAR_DIR=/tmp/loupe-bench python manage.py migrate -v0
    LOUPE_VAR_DIR=/tmp/loupe-bench python manage.py bench_export --items 100000
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from annotate import storage
from annotate.models import Annotation, Item, Project, Round
from annotate.services.exports import FORMATS
from annotate.services.item_counts import item_counts_add
from annotate.services.label_counts import label_counts_recount

CLASSES = [f"class-{k}" for k in range(10)]


def tiny_png(value: int) -> bytes:
    """A valid 2x2 grey PNG whose pixel value (and so checksum) depends on ``value``."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    v = value.to_bytes(4, "big")
    raw = b"".join(b"\x00" + bytes([v[2], v[3]]) for _ in range(2))  # 2x2, 8-bit grey, 2 bytes/row
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)
    text = chunk(b"tEXt", b"n\x00" + str(value).encode())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + text + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Command(BaseCommand):
    help = "Measure peak memory and time of each export format on a synthetic project."

    def add_arguments(self, parser):
        parser.add_argument("--items", type=int, default=100_000)
        parser.add_argument("--small", type=int, default=1_000)
        parser.add_argument("--formats", default=",".join(FORMATS))

    def handle(self, *args, **o):
        small = self._project(o["small"])
        big = self._project(o["items"])
        formats = [f for f in o["formats"].split(",") if f]
        rows = []
        with tempfile.TemporaryDirectory(prefix="loupe-bench-export-") as tmp:
            for fmt in formats:
                for project in (small, big):
                    out = Path(tmp) / f"{project.pk}-{fmt}.{FORMATS[fmt][0]}"
                    rows.append((fmt, project.items.count(), *self._run(project, fmt, out)))
                    out.unlink(missing_ok=True)
        self.stdout.write("| format | items | records | file MiB | seconds | peak RSS MiB |")
        self.stdout.write("| --- | ---: | ---: | ---: | ---: | ---: |")
        for fmt, n, records, size, secs, rss in rows:
            self.stdout.write(f"| {fmt} | {n} | {records} | {size / 2**20:.1f} | {secs:.1f} | {rss:.0f} |")

    def _run(self, project, fmt, out):
        cmd = [sys.executable, "manage.py", "export_project", str(project.pk), "--format", fmt, "--out", str(out),
               "--predictions"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=settings.BASE_DIR, env=os.environ.copy(), capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
        m = re.search(r"wrote (\d+) records .* peak RSS of this process (\d+) MiB", res.stdout)
        return int(m.group(1)), out.stat().st_size, secs, float(m.group(2))

    def _project(self, n: int) -> Project:
        name = f"bench-export-{n}"
        project = Project.objects.filter(name=name).first()
        if project is not None and project.items.count() == n:
            return project
        if project is not None:
            project.delete()
        self.stdout.write(f"building {name} ...")
        User = get_user_model()
        users = [User.objects.get_or_create(username=f"bench-{k}")[0] for k in range(3)]
        project = Project.objects.create(name=name, classes=CLASSES, extractor="precomputed")
        img_dir = storage.images_dir(project)
        img_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        d = 16
        X = rng.normal(size=(n, d)).astype(np.float32)
        rel = storage.embedding_relpath(project, "precomputed", 1)
        storage.media_path(rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(storage.media_path(rel), X)
        project.embedding_file, project.embedding_version, project.embedding_dim = rel, 1, d
        project.save()
        step = 5000
        for a in range(0, n, step):
            items = []
            for i in range(a, min(n, a + step)):
                data = tiny_png(i)
                fname = f"{i:07d}.png"
                (img_dir / fname).write_bytes(data)
                items.append(Item(project=project, file=f"projects/{project.pk}/images/{fname}",
                                  original_name=f"folder/{i:07d}.png", checksum=hashlib.sha256(data).hexdigest(),
                                  row=i, width=2, height=2))
            with transaction.atomic():
                Item.objects.bulk_create(items, batch_size=1000)
                item_counts_add(project_id=project.pk, items=len(items), embedded=len(items))
        ids = list(Item.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
        anns = [Annotation(item_id=pk, annotator=users[k % 3], label=CLASSES[k % 10], time_ms=1000)
                for k, pk in enumerate(ids) if k % 5]
        for a in range(0, len(anns), step):
            with transaction.atomic():
                Annotation.objects.bulk_create(anns[a:a + step], batch_size=1000)
        label_counts_recount(project_id=project.pk)  # bulk rows past the label services (services/label_counts.py)
        model = storage.models_dir(project) / "round-00001.npz"
        model.parent.mkdir(parents=True, exist_ok=True)
        np.savez(model, coef=rng.normal(size=(10, d)), intercept=np.zeros(10))
        Round.objects.create(project=project, number=1, status=Round.Status.DONE, strategy="margin",
                             model_file=str(model.relative_to(Path(settings.MEDIA_ROOT))))
        return project
