"""The admin's import and export forms (the project form, generated from the schemas, is in forms.py)."""
from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings

from .services.exports import FORMATS
from .services.imports import LABELS_AS


class ImportForm(forms.Form):
    zip_file = forms.FileField(required=False, label="Zip of images",
                               help_text="Recursive; jpg, png, webp, bmp, tiff.")
    folder = forms.CharField(required=False, label="Or a folder on the server",
                             help_text="Absolute path readable by the worker.")
    manifest_file = forms.FileField(required=False, label="Manifest (CSV or JSON)",
                                    help_text="Columns/keys: image (path relative to the zip/folder), optional label.")
    manifest_url = forms.CharField(required=False, label="Or a manifest path or URL",
                                   help_text="A server path, file:// or http(s):// URL.")
    embeddings = forms.FileField(required=False, label="Embeddings (.npy)",
                                 help_text="One float row per manifest row (or per image in sorted path order).")
    class_folders = forms.BooleanField(required=False, label="Read <class>/<file> folders as labels")
    labels_as = forms.ChoiceField(
        choices=[("ground_truth", "ground truth (kept apart, for evaluation)"),
                 ("prelabels", "pre-labels (count as annotations)")],
        initial="ground_truth", label="Use labels as")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user is not None and not user.is_superuser:
            # Only superusers may point the server at its own files (a folder, a path or file:// URL).
            del self.fields["folder"]
            self.fields["manifest_url"].label = "Or a manifest URL"
            self.fields["manifest_url"].help_text = "An http(s):// URL."

    def clean_manifest_url(self) -> str:
        url = (self.cleaned_data.get("manifest_url") or "").strip()
        if url and self.user is not None and not self.user.is_superuser and not url.lower().startswith(
                ("http://", "https://")):
            raise forms.ValidationError("only http(s):// URLs are allowed; upload the manifest file instead")
        if url and self.user is not None and not self.user.is_superuser:
            from .services.imports import ImportRejected, check_public_url  # noqa: PLC0415

            try:
                check_public_url(url, what="manifest URL")
            except ImportRejected as exc:
                raise forms.ValidationError(str(exc)) from None
        return url

    def clean(self):
        data = super().clean()
        if not (data.get("zip_file") or data.get("folder") or data.get("manifest_file") or data.get("manifest_url")):
            raise forms.ValidationError("give a zip, a folder, or a manifest that lists the images")
        if data.get("zip_file") and data.get("folder"):
            raise forms.ValidationError("give either a zip or a folder, not both")
        if data.get("manifest_file") and data.get("manifest_url"):
            raise forms.ValidationError("give either a manifest file or a manifest path/URL, not both")
        folder = data.get("folder")
        if folder and not Path(folder).is_dir():
            self.add_error("folder", f"{folder!r} is not a folder on the server")
        for key in ("zip_file", "manifest_file", "embeddings"):
            f = data.get(key)
            if f is not None and f.size > settings.LOUPE_MAX_UPLOAD_BYTES:
                self.add_error(key, f"{f.name} is {f.size} bytes, more than LOUPE_MAX_UPLOAD_BYTES="
                                    f"{settings.LOUPE_MAX_UPLOAD_BYTES}")
        if data.get("labels_as") not in LABELS_AS:
            self.add_error("labels_as", f"choose one of {list(LABELS_AS)}")
        return data


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[(k, v[1]) for k, v in FORMATS.items()], initial="label_studio")
    predictions = forms.BooleanField(required=False, label="Include model predictions for unlabeled items")
