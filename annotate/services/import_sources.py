"""Where imported images come from: folders, zips, manifests and URLs; and the per-file image check.

Everything here reads; nothing writes to the database or MEDIA_ROOT (``imports`` does that).
Problems with the import as a whole raise :class:`ImportRejected`; problems with one file are
raised as ``OSError``/``ValueError`` by the entry's reader or :func:`check_image` and become a
reported skip.
"""
from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from django.conf import settings

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
# Pillow format name -> file extension we store the image under.
FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tiff"}
URL_TIMEOUT_S = 15


class ImportRejected(ValueError):
    """The import as a whole cannot go ahead; the message names the problem.  Nothing was written."""


@dataclass
class _Entry:
    name: str  # relative POSIX path (or URL) used in reports and as Item.original_name
    read: Callable[[int], bytes]  # read(limit) -> at most limit bytes
    size: int | None = None
    label: str = ""
    emb_row: int | None = None


# ----------------------------------------------------------------------------- sources
def _safe_member_name(name: str) -> str:
    """Normalise a zip member name; raise ImportRejected if it escapes the target folder."""
    raw = name.replace("\\", "/")
    p = PurePosixPath(raw)
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or ".." in p.parts:
        raise ImportRejected(f"zip entry {name!r} escapes the target folder; the archive is rejected")
    return str(PurePosixPath(*[part for part in p.parts if part not in ("", ".")]))


def _zip_entries(path: str) -> tuple[list[_Entry], zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportRejected(f"{os.path.basename(path)!r} is not a readable zip archive: {exc}") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    total = sum(i.file_size for i in infos)
    limit = settings.LOUPE_MAX_UPLOAD_BYTES
    if total > limit:
        zf.close()
        raise ImportRejected(
            f"the zip would unpack to {total} bytes, more than LOUPE_MAX_UPLOAD_BYTES={limit}; the archive is rejected"
        )
    entries = []
    for info in infos:
        name = _safe_member_name(info.filename)
        if name.startswith("__MACOSX/"):
            continue
        is_link = stat.S_ISLNK(info.external_attr >> 16)

        def read(lim: int, info=info, is_link=is_link) -> bytes:
            if is_link:
                raise OSError("a symbolic link, not a file")
            try:
                with zf.open(info) as fh:  # reads at most lim bytes, whatever the header claims
                    return fh.read(lim)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                # One damaged member (bad CRC, broken deflate stream, encrypted, unknown method): that
                # file is skipped and named, the rest of the archive is imported.
                raise OSError(f"damaged zip member ({type(exc).__name__}: {exc})") from None

        entries.append(_Entry(name=name, read=read, size=info.file_size))
    return entries, zf


def _folder_entries(root: str) -> list[_Entry]:
    base = Path(root).resolve()
    entries = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = full.relative_to(base).as_posix()

            def read(lim: int, full=full) -> bytes:
                if full.is_symlink():
                    raise OSError("a symbolic link, not a file")
                with open(full, "rb") as fh:
                    return fh.read(lim)

            try:
                size = full.lstat().st_size
            except OSError:
                size = None
            entries.append(_Entry(name=rel, read=read, size=size))
    return entries


def check_public_url(url: str, *, what: str = "URL") -> None:
    """Refuse a URL whose host resolves to a loopback, private, link-local or otherwise non-global
    address (server-side request forgery: the worker must not become a way into the internal network)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ImportRejected(f"{what} {url!r}: only http(s):// URLs with a host name are allowed here")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImportRejected(f"{what} {url!r}: cannot resolve host {parts.hostname!r} ({exc})") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global:
            raise ImportRejected(
                f"{what} {url!r}: host {parts.hostname!r} is {ip}, not a public address; "
                "only superusers may import from internal addresses"
            )


class _PublicRedirects(urllib.request.HTTPRedirectHandler):
    """Re-check every redirect target: a public host must not bounce the worker to an internal one."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_public_url(newurl, what="redirect")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(ref: str, limit: int, *, what: str, public_only: bool = False) -> bytes:
    """Bytes of a path, file:// or http(s):// URL, at most ``limit``; ImportRejected naming the failure.

    ``public_only``: http(s) only, to public addresses (imports started by non-superusers).
    """
    scheme = urllib.parse.urlsplit(ref).scheme.lower()
    try:
        if public_only:
            check_public_url(ref, what=what)
        if scheme in ("http", "https"):
            req = urllib.request.Request(ref, headers={"User-Agent": "Loupe-import"})
            opener = urllib.request.build_opener(_PublicRedirects) if public_only else urllib.request.build_opener()
            with opener.open(req, timeout=URL_TIMEOUT_S) as resp:  # scheme checked above
                data = resp.read(limit + 1)
        elif scheme == "file":
            with open(urllib.request.url2pathname(urllib.parse.urlsplit(ref).path), "rb") as fh:
                data = fh.read(limit + 1)
        elif scheme == "":
            with open(ref, "rb") as fh:
                data = fh.read(limit + 1)
        else:
            raise ImportRejected(f"{what} {ref!r}: unsupported scheme {scheme!r}; use a path, file:// or http(s)://")
    except urllib.error.HTTPError as exc:
        raise ImportRejected(f"cannot fetch {what} {ref!r}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ImportRejected(f"cannot fetch {what} {ref!r}: {exc.reason}") from None
    except TimeoutError:
        raise ImportRejected(f"cannot fetch {what} {ref!r}: no answer within {URL_TIMEOUT_S} s") from None
    except OSError as exc:
        raise ImportRejected(f"cannot read {what} {ref!r}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ImportRejected(f"{what} {ref!r} is larger than the limit of {limit} bytes")
    return data


# ----------------------------------------------------------------------------- manifests
_IMAGE_KEYS = ("image", "path", "file", "filename", "file_name", "image_path")
_LABEL_KEYS = ("label", "class", "category", "choice", "class_name", "target")
_LS_LOCAL_PREFIX = "/data/local-files/?d="


def _clean_ref(ref: str) -> str:
    ref = ref.strip()
    if ref.startswith(_LS_LOCAL_PREFIX):
        ref = urllib.parse.unquote(ref[len(_LS_LOCAL_PREFIX):])
    return ref


def _ls_label(task: dict) -> str:
    """The last annotation's choice of a Label Studio task (or its first prediction's)."""
    for key in ("annotations", "completions", "predictions"):
        for ann in reversed(task.get(key) or []):
            for res in ann.get("result") or []:
                choices = (res.get("value") or {}).get("choices") or []
                if choices:
                    return str(choices[0])
    return ""


def parse_manifest(data: bytes, name: str) -> list[tuple[str, str]]:
    """(image reference, label or "") rows of a CSV or JSON manifest, in file order.

    JSON may be a list of objects with an image key and optional label key (also Label Studio
    JSON_MIN), a list of Label Studio tasks (``data.image`` + annotation choices), or a COCO-style
    classification file (``images``, ``categories``, ``annotations`` with ``category_id``).
    """
    text = data.decode("utf-8-sig", errors="strict") if data else ""
    stripped = text.lstrip()
    rows: list[tuple[str, str]] = []
    if stripped.startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportRejected(f"manifest {name!r} is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and "images" in doc:
            try:
                rows = _coco_rows(doc, name)
            except (KeyError, TypeError, AttributeError) as exc:  # a field missing or of the wrong kind
                raise ImportRejected(
                    f"manifest {name!r} is not a COCO classification file ({type(exc).__name__}: {exc}): "
                    "'images' is a list of objects with 'id' and 'file_name', 'categories' of objects with 'id' "
                    "and 'name', 'annotations' of objects with 'image_id' and 'category_id'") from None
        elif isinstance(doc, list):
            for i, obj in enumerate(doc):
                if not isinstance(obj, dict):
                    raise ImportRejected(f"manifest {name!r}: entry {i} is not an object")
                try:
                    rows.append(_json_row(obj, name, i))
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    raise ImportRejected(
                        f"manifest {name!r}: entry {i} is not an image entry ({type(exc).__name__}: {exc}): "
                        f"an object with one of the keys {list(_IMAGE_KEYS)} and optionally a label, or a "
                        "Label Studio task") from None
        else:
            raise ImportRejected(f"manifest {name!r}: expected a JSON list of images or a COCO file")
    else:
        reader = csv.DictReader(io.StringIO(text))
        try:
            rows = _csv_rows(reader, name)
        except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, ...
            raise ImportRejected(f"manifest {name!r}: CSV line {reader.line_num + 1}: {exc}") from None
    if not rows:
        raise ImportRejected(f"manifest {name!r} lists no images")
    return rows


def _json_row(obj: dict, name: str, i: int) -> tuple[str, str]:
    if isinstance(obj.get("data"), dict):
        ref = obj["data"].get("image") or next((v for v in obj["data"].values() if isinstance(v, str)), "")
        return _clean_ref(str(ref)), _ls_label(obj)
    key = next((k for k in _IMAGE_KEYS if obj.get(k)), None)
    if key is None:
        raise ImportRejected(f"manifest {name!r}: entry {i} has none of the keys {list(_IMAGE_KEYS)}")
    lkey = next((k for k in _LABEL_KEYS if k in obj), None)
    label = obj.get(lkey) if lkey else ""
    if isinstance(label, dict):  # JSON_MIN with several choices: {"choices": [...]}
        label = (label.get("choices") or [""])[0]
    return _clean_ref(str(obj[key])), "" if label is None else str(label)


def _coco_rows(doc: dict, name: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    cats = {c["id"]: str(c["name"]) for c in doc.get("categories", [])}
    lab = {}
    for ann in doc.get("annotations", []):
        if ann.get("category_id") not in cats:
            raise ImportRejected(f"manifest {name!r}: annotation {ann.get('id')} names an unknown category_id")
        lab[ann["image_id"]] = cats[ann["category_id"]]
    for img in doc["images"]:
        ref = _clean_ref(str(img.get("file_name") or img.get("path") or ""))
        rows.append((ref, lab.get(img.get("id"), "")))
    return rows


def _csv_rows(reader: csv.DictReader, name: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    key = next((k for k in _IMAGE_KEYS if k in fields), None)
    if key is None:
        raise ImportRejected(
            f"manifest {name!r}: the CSV header {reader.fieldnames} has no image column "
            f"(one of {list(_IMAGE_KEYS)})"
        )
    lkey = next((k for k in _LABEL_KEYS if k in fields), None)
    others = [f for f in fields if f and f != key]
    if lkey is None and len(others) == 1:
        # image + one unknown column: almost surely labels under another name; importing
        # without them would drop every label silently
        raise ImportRejected(
            f"manifest {name!r}: column {others[0]!r} is not a label column; name the label column one of "
            f"{list(_LABEL_KEYS)} (or drop the column to import without labels)"
        )
    original = dict(zip(fields, reader.fieldnames or []))
    for row in reader:
        ref = (row.get(original[key]) or "").strip()
        if not ref:
            continue
        rows.append((_clean_ref(ref), (row.get(original[lkey]) or "").strip() if lkey else ""))
    return rows


# ----------------------------------------------------------------------------- checks
class _Refused(Exception):
    """Refused from the header alone (format, pixel count), before any decoder runs."""


def check_image(data: bytes) -> tuple[str, int, int]:
    """(extension, width, height) of valid image bytes; ValueError with the reason otherwise."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only: the size is known before decoding
            fmt = im.format
            if fmt not in FORMAT_EXT:  # before any decoding: EPS/PostScript would be decoded by Ghostscript
                raise _Refused(f"format {fmt} is not allowed (allowed: jpg, png, webp, bmp, tiff)")
            width, height = im.size
            limit = settings.LOUPE_MAX_IMAGE_PIXELS
            if width * height > limit:
                raise _Refused(f"{width}×{height} = {width * height} pixels, more than "
                               f"LOUPE_MAX_IMAGE_PIXELS={limit}")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:  # verify() leaves the image unusable; reopen to decode
            im.load()
            width, height = im.size
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can identify") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"rejected as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"corrupt image ({exc})") from None
    return FORMAT_EXT[fmt], width, height


def class_labels(names: list[str]) -> list[str]:
    """The ``<class>`` of each ``<class>/<file>`` path ("" for files at the top).

    Folders that wrap everything (``shapes/cat/1.png``, ``shapes/dog/2.png``: a zip made from a
    folder) are skipped, so the class is the first folder where the paths differ.
    """
    parts = [PurePosixPath(n).parts for n in names]
    k = 0
    while parts and all(len(p) > k + 2 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [p[k] if len(p) > k + 1 else "" for p in parts]


def _missing(name: str, reason: str):
    def read(lim: int) -> bytes:
        raise FileNotFoundError(reason)

    return read


def _file_reader(full: str):
    def read(lim: int) -> bytes:
        with open(full, "rb") as fh:
            return fh.read(lim)

    return read


def _size(full: str) -> int | None:
    try:
        return os.stat(full).st_size
    except (OSError, ValueError):
        return None
