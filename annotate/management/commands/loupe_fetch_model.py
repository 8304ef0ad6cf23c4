"""``python manage.py loupe_fetch_model <id> [--to DIR] [--check]``: bring a Hugging Face backbone to this machine.

Workers never download (extractor ``hf`` loads from the local cache only).  Run this on a machine
with network: it downloads the model's configs and safetensors weights (never pickled ``.bin``
files) into the Hugging Face cache (``HF_HOME``/hub), or into a plain folder with ``--to``.  For an
offline worker, copy ``models--<owner>--<name>`` from that cache into the worker's cache, or copy
the ``--to`` folder and give its path as the model.  ``--check`` then loads it the way a worker
would (offline, safetensors only) and embeds one blank image.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from selection.embed_cli import fetch_model
from selection.extractors import ExtractorError, make_extractor


class Command(BaseCommand):
    help = "Download a Hugging Face image model (configs + safetensors) for offline workers."

    def add_arguments(self, parser):
        parser.add_argument("model", help="model id, e.g. facebook/dinov2-small")
        parser.add_argument("--to", default=None, help="a plain folder instead of the Hugging Face cache")
        parser.add_argument("--revision", default=None)
        parser.add_argument("--check", action="store_true", help="load it offline and embed one image")

    def handle(self, *args, **o):
        try:
            path = fetch_model(o["model"], to=o["to"], revision=o["revision"])
        except ExtractorError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001  (network or hub errors: say which model and why)
            raise CommandError(f"could not download {o['model']!r}: {type(exc).__name__}: {exc}") from None
        self.stdout.write(f"{o['model']} is in {path}")
        if o["to"] is None:
            self.stdout.write("offline workers: copy the folder models--" + o["model"].replace("/", "--")
                              + " of this cache into the worker's Hugging Face cache (HF_HOME/hub)")
        if o["check"]:
            self.stdout.write(self.style.SUCCESS(check_model(o["to"] or o["model"])))


def check_model(model: str) -> str:
    from PIL import Image  # noqa: PLC0415

    try:
        X = make_extractor("hf", {"model": model, "device": "cpu", "workers": 0}).extract(
            lambda i: Image.new("RGB", (64, 64), (128, 128, 128)), 1)
    except ExtractorError as exc:
        raise CommandError(str(exc)) from None
    return f"{model} loads offline: embeddings of {X.shape[1]} dimensions"
