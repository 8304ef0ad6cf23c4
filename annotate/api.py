"""The labeling JSON API (``/api/projects/<id>/...``), used by the labeling page.

Thin views: authenticate, parse, call one service, render.  Errors are JSON ``{"error": "..."}``
with a 4xx status; services refuse bad input before writing, so a refused request changes nothing.

Auth: the session (browsers; CSRF is enforced on writes, as Django does for forms) or an API
token (``Authorization: Token <key>``; no CSRF, since a browser never sends it on its own).
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DataError
from django.http import Http404, HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from . import selectors, throttle
from .models import Annotation
from .payloads import annotation_payload, entry_payload
from .permissions import project_for
from .services.annotations import annotation_submit, annotation_undo, is_item_id
from .services.errors import ServiceError
from .services.queue import MAX_LEASE, queue_lease, queue_release
from .services.tokens import parse_authorization

DEFAULT_LEASE = 6


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # changes nothing; a POST without the token still learns that the path is wrong
def not_found(request: HttpRequest) -> JsonResponse:
    """404 for a path under ``/api/`` that names no endpoint (any method)."""
    return error(f"no API endpoint at {request.path!r}: the paths are /api/projects/<number>/<action> "
                 "and /api/jobs/<uuid> (the README's API table lists them)", 404)


def authenticate(request: HttpRequest):
    """Set ``request.user`` from a token header when there is one.  Returns an error response or None."""
    header = request.headers.get("Authorization")
    if header:
        key = parse_authorization(header)
        if key is None:
            return error("unsupported Authorization header; use 'Authorization: Token <key>'", 401)
        user, throttled = throttle.token_authenticate(address=throttle.client_address(request), key=key)
        if throttled:
            resp = error("too many failed token attempts from this address; try again later", 429)
            resp["Retry-After"] = str(settings.LOUPE_AUTH_WINDOW_SECONDS)
            return resp
        if user is None:
            return error("invalid or revoked API token", 401)
        request.user = user
        request.loupe_token_auth = True
        return None
    request.loupe_token_auth = False
    if not request.user.is_authenticated:
        return error("authentication required: log in or send 'Authorization: Token <key>'", 401)
    return None


def _csrf_failure(request: HttpRequest) -> JsonResponse | None:
    reason: list[str] = []

    def reject(req, why):  # CsrfViewMiddleware calls this with the reason
        reason.append(why)
        return error(f"CSRF check failed: {why}", 403)

    mw = CsrfViewMiddleware(lambda req: None)
    mw._reject = reject  # keep the middleware's own checks; only shape the answer as JSON
    return mw.process_view(request, None, (), {})


def api_view(*methods: str):
    """Decorator: allowed methods, auth (+CSRF for session writes), JSON body, errors as JSON."""

    def wrap(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def inner(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                resp = error(f"method {request.method} is not allowed here; use {', '.join(methods)}", 405)
                resp["Allow"] = ", ".join(methods)
                return resp
            failed = authenticate(request)
            if failed is not None:
                return failed
            if request.method not in ("GET", "HEAD", "OPTIONS") and not request.loupe_token_auth:
                failed = _csrf_failure(request)
                if failed is not None:
                    return failed
            try:
                _check_query(request)
                request.json = _body(request)
                return view(request, *args, **kwargs)
            except ServiceError as exc:
                return error(exc.message, exc.status)
            except Http404 as exc:
                return error(str(exc) or "not found", 404)
            except PermissionDenied as exc:
                return error(str(exc) or "permission denied", 403)
            except DataError as exc:  # a value the database cannot store (too long, out of range): bad input
                return error(f"a value does not fit its field: {str(exc).splitlines()[0][:200]}", 400)

        return inner

    return wrap


def _body(request: HttpRequest) -> dict[str, Any]:
    if request.method in ("GET", "HEAD"):
        return {}
    raw = request.body
    if not raw.strip():
        return {}
    ctype = request.content_type or ""
    if ctype != "application/json":
        raise ServiceError(f"the body must be JSON (Content-Type: application/json); got {ctype or 'none'!r}",
                           status=415)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise ServiceError("the JSON body is nested too deeply") from None
    if b"\\u0000" in raw and _has_nul(data):  # no field takes NUL, and PostgreSQL text cannot hold it
        raise ServiceError("the JSON body contains a NUL character (\\u0000), which no field accepts")
    if not isinstance(data, dict):
        raise ServiceError(f"the JSON body must be an object; got {type(data).__name__}")
    return data


def _has_nul(data: Any) -> bool:
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if "\x00" in x:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def _check_query(request: HttpRequest) -> None:
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            raise ServiceError(f"query parameter {key.replace(chr(0), '')!r} contains a NUL byte")


def _fields(data: dict[str, Any], allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ServiceError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise ServiceError(f"missing field(s) {missing}")
    return data


# --------------------------------------------------------------------------- endpoints
@api_view("GET")
def status(request, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    return JsonResponse({
        "project": {"id": project.pk, "name": project.name, "classes": project.classes},
        "progress": selectors.project_progress(project=project, user=request.user),
    })


@api_view("POST")
def lease(request, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    data = _fields(request.json, {"n", "sending"})
    sending = data.get("sending", [])
    if not isinstance(sending, list) or len(sending) > MAX_LEASE or not all(is_item_id(i) for i in sending):
        raise ServiceError(f"sending={sending!r:.80} must be a list of at most {MAX_LEASE} item ids "
                           "(positive integers): the items whose label or skip is on its way")
    entries = queue_lease(project=project, user=request.user, n=data.get("n", DEFAULT_LEASE), sending=sending)
    return JsonResponse({
        "items": [entry_payload(e, project=project) for e in entries],
        "progress": selectors.project_progress(project=project, user=request.user),
    })


def _submit(request, project_id: int, *, skip: bool):
    project = project_for(user=request.user, project_id=project_id)
    allowed = {"item_id", "client_id", "time_ms"} | (set() if skip else {"label", "origin"})
    data = _fields(request.json, allowed, {"item_id"} | (set() if skip else {"label"}))
    res = annotation_submit(project=project, user=request.user, item_id=data["item_id"], label=data.get("label"),
                            skip=skip, client_id=data.get("client_id"), time_ms=data.get("time_ms", 0),
                            origin=data.get("origin", Annotation.Origin.MANUAL))
    return JsonResponse({
        "annotation": annotation_payload(res.annotation),
        "created": res.created,
        # the counts and the round the submit read (they fed the refill policy; the round is the one
        # it may have started)
        "progress": selectors.project_progress(project=project, counts=res.progress, current=res.round),
    }, status=201 if res.created else 200)


@api_view("POST")
def label(request, project_id: int):
    return _submit(request, project_id, skip=False)


@api_view("POST")
def skip(request, project_id: int):
    return _submit(request, project_id, skip=True)


@api_view("POST")
def undo(request, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    data = _fields(request.json, {"item_id", "client_id"})
    res = annotation_undo(project=project, user=request.user, item_id=data.get("item_id"),
                          client_id=data.get("client_id"))
    return JsonResponse({
        "undone": annotation_payload(res.undone),
        "annotation": annotation_payload(res.annotation),
        "item": entry_payload(res.entry, project=project),
        "created": res.created,
        "progress": selectors.project_progress(project=project, user=request.user),
    }, status=201 if res.created else 200)


@api_view("POST")
def release(request, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    data = _fields(request.json, {"item_ids"})
    ids = data.get("item_ids")
    if ids is not None and (not isinstance(ids, list) or not all(is_item_id(i) for i in ids)):
        raise ServiceError(f"item_ids={ids!r} must be a list of item ids (positive integers)")
    n = queue_release(project=project, user=request.user, item_ids=ids)
    return JsonResponse({"released": n})
