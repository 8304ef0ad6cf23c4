"""The admin's import and export forms (the project form, generated from the schemas, is in forms.py)."""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from django import forms
from django.conf import settings

from .services.exports import FORMATS
from .services.import_sources import IMAGE_EXTENSIONS, ImportRejected, parse_manifest
from .services.import_sources import _safe_member_name as safe_member_name  # the job's rule for member paths
from .services.imports import LABELS_AS

ALLOWED_IMAGES = "jpg, png, webp, bmp, tiff"


def zip_problem(upload) -> str:
    """Why an uploaded zip cannot be imported ("" when it may be): not a zip, or no image in it.

    Reads only the archive's directory, so a wrong file is refused by the form at once instead of
    failing the import job later; the job still checks every member."""
    try:
        with zipfile.ZipFile(upload) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{upload.name} is not a zip archive ({exc})"
    finally:
        upload.seek(0)
    try:
        names = [safe_member_name(i.filename) for i in infos]  # the job's own rules, said before it starts
    except ImportRejected as exc:
        return f"{upload.name}: {exc}"
    unpacked = sum(i.file_size for i in infos)
    if unpacked > settings.LOUPE_MAX_UPLOAD_BYTES:
        return (f"{upload.name} would unpack to {unpacked} bytes, more than LOUPE_MAX_UPLOAD_BYTES="
                f"{settings.LOUPE_MAX_UPLOAD_BYTES}")
    images = [n for n in names if PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS and "__MACOSX" not in n]
    if not images:
        what = "is empty" if not names else f"holds {len(names)} file(s) but no image"
        return f"{upload.name} {what} (images: {ALLOWED_IMAGES})"
    return ""


def _is_npz(upload) -> bool:
    """Whether a zip upload holds only .npy members (numpy.savez), read from its directory."""
    try:
        with zipfile.ZipFile(upload) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
    finally:
        upload.seek(0)
    return bool(names) and all(n.endswith(".npy") for n in names)


def npy_problem(upload) -> str:
    """Why an uploaded embeddings file is not an (n, d) numeric .npy matrix ("" when it is); reads its header only."""
    try:
        head = upload.read(6)
        upload.seek(0)
        if head != b"\x93NUMPY":
            if head[:2] == b"PK" and not _is_npz(upload):
                hint = "a zip archive of other files: the zip of images goes in the 'Zip of images' field"
            elif head[:2] == b"PK":
                hint = "a .npz archive: save the matrix itself with numpy.save('X.npy', X)"
            else:
                hint = "a CSV or other text? load it and save it with numpy.save('X.npy', X)"
            return f"{upload.name} is not a NumPy .npy file ({hint})"
        major, _ = np.lib.format.read_magic(upload)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(upload)
        header_end = upload.tell()
    except (ValueError, OSError) as exc:
        return f"{upload.name} has a damaged .npy header ({exc})"
    finally:
        upload.seek(0)
    if len(shape) != 2 or dtype.kind not in "fiu":
        return (f"{upload.name} holds a {dtype} array of shape {shape}; embeddings are an (n, d) matrix of "
                "numbers, one row per image")
    if 0 in shape:
        return f"{upload.name} holds an empty matrix (shape {shape}); embeddings need one row per image, d >= 1"
    data_bytes = upload.size - header_end
    if data_bytes < shape[0] * shape[1] * dtype.itemsize:
        return (f"{upload.name} is cut short: its header says {shape} {dtype} ({shape[0] * shape[1] * dtype.itemsize} "
                f"bytes of data) but it holds {data_bytes}; upload the whole file")
    return ""


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
                                 help_text="One float row per manifest row (or per image in sorted path order). "
                                           "To replace embeddings the project has from an extractor (or "
                                           "of another width), include every image of the project, each "
                                           "with its row.")
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

    def _upload(self, key: str):
        """The uploaded file ``key`` (None when none), refused when over LOUPE_MAX_UPLOAD_BYTES."""
        f = self.cleaned_data.get(key)
        if f is not None and f.size > settings.LOUPE_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"{f.name} is {f.size} bytes, more than LOUPE_MAX_UPLOAD_BYTES="
                                        f"{settings.LOUPE_MAX_UPLOAD_BYTES}")
        return f

    def clean_zip_file(self):
        f = self._upload("zip_file")
        if f is not None and (problem := zip_problem(f)):
            raise forms.ValidationError(problem)
        return f

    def clean_embeddings(self):
        f = self._upload("embeddings")
        if f is not None and (problem := npy_problem(f)):
            raise forms.ValidationError(problem)
        return f

    def clean_manifest_file(self):
        """A manifest small enough to read in the request is parsed here, so a wrong column is named at once
        (a larger one is parsed by the import job, with the same messages)."""
        f = self._upload("manifest_file")
        if f is not None and f.size <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE:
            try:
                parse_manifest(f.read(), f.name)
            except ImportRejected as exc:
                raise forms.ValidationError(str(exc)) from None
            except UnicodeDecodeError as exc:
                raise forms.ValidationError(f"{f.name} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                            "a manifest is a CSV or JSON file") from None
            finally:
                f.seek(0)
        return f

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
        sources = ("zip_file", "folder", "manifest_file", "manifest_url")
        # A source that was given but refused has its own error; "give a zip" would only contradict it.
        if not any(data.get(k) for k in sources) and not any(k in self.errors for k in sources):
            raise forms.ValidationError("give a zip, a folder, or a manifest that lists the images")
        if data.get("zip_file") and data.get("folder"):
            raise forms.ValidationError("give either a zip or a folder, not both")
        if data.get("manifest_file") and data.get("manifest_url"):
            raise forms.ValidationError("give either a manifest file or a manifest path/URL, not both")
        folder = data.get("folder")
        if folder and not Path(folder).is_dir():
            self.add_error("folder", f"{folder!r} is not a folder on the server")
        if data.get("labels_as") not in LABELS_AS:
            self.add_error("labels_as", f"choose one of {list(LABELS_AS)}")
        return data


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[(k, v[1]) for k, v in FORMATS.items()], initial="label_studio")
    predictions = forms.BooleanField(required=False, label="Include model predictions for unlabeled items")
