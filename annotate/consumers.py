"""WebSocket consumer: one connection joins its project's group and receives pushes.

Auth in ``connect``: the session user (``AuthMiddlewareStack``) or an ``Authorization: Token``
header, and membership through ``permissions.project_for``; anything else is closed with 4401
(not authenticated) or 4404 (no such project / not a member).  Failed tokens count toward the same
throttle as over HTTP (``throttle.token_authenticate``); while blocked the socket is closed with 4429.
One handler per message type; each forwards the payload to the browser as JSON.  Clients may send
``{"type": "ping"}`` and get ``{"type": "pong"}`` back (a cheap liveness check); a frame that is not
JSON text is closed with 4400 (it raised in the consumer: a traceback in the log and no close frame).
A path under ``ws/`` that is no route is refused at the handshake (``NoRouteConsumer``; it was a 500).
"""
from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from . import realtime, throttle
from .permissions import project_for
from .services.tokens import parse_authorization

log = logging.getLogger(__name__)


@database_sync_to_async
def _member_project_id(user, project_id: int) -> int:
    return project_for(user=user, project_id=project_id).pk


@database_sync_to_async
def _token_authenticate(address: str, key: str):
    return throttle.token_authenticate(address=address, key=key)


class ProjectConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    groups_joined: tuple[str, ...] = ()  # the project's, this member's on it, this user's

    async def connect(self) -> None:
        realtime.set_server_loop(asyncio.get_running_loop())
        user = self.scope.get("user")
        headers = dict(self.scope.get("headers") or [])
        auth = headers.get(b"authorization")
        if auth:
            key = parse_authorization(auth.decode("latin-1"))
            user, throttled = None, False
            if key:
                user, throttled = await _token_authenticate(throttle.scope_address(self.scope), key)
            if throttled:
                await self.close(code=4429)  # too many failed tokens from this address; the window will pass
                return
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            project_id = await _member_project_id(user, int(self.scope["url_route"]["kwargs"]["project_id"]))
        except (Http404, PermissionDenied):
            await self.close(code=4404)
            return
        group = realtime.group_name(project_id)
        joined = (group, realtime.member_group_name(project_id, user.pk), realtime.user_group_name(user.pk))
        try:
            for name in joined:
                await self.channel_layer.group_add(name, self.channel_name)
        except realtime.OUTAGE_ERRORS as exc:
            # Channel layer down: refuse the handshake (the client retries with backoff) instead of a 500.
            log.warning("WebSocket for project %s refused: channel layer unreachable (%s)", project_id, exc)
            await self.close(code=1011)
            return
        self.group, self.groups_joined = group, joined
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.groups_joined:
            try:
                for name in self.groups_joined:
                    await self.channel_layer.group_discard(name, self.channel_name)
            except realtime.OUTAGE_ERRORS as exc:  # the group entry expires in the layer by itself
                log.warning("group_discard for %s failed: %s", self.group, exc)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if content is None:
            await self.close(code=4400)  # not JSON text: the page only ever sends {"type": "ping"}
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "t": content.get("t")})

    # One handler per message type (``queue.updated`` -> ``queue_updated``); the payload goes out as is.
    async def queue_updated(self, event: dict) -> None:
        await self.send_json(event)

    async def round_status(self, event: dict) -> None:
        await self.send_json(event)

    async def stats_updated(self, event: dict) -> None:
        await self.send_json(event)

    async def job_progress(self, event: dict) -> None:
        await self.send_json(event)

    async def membership_revoked(self, event: dict) -> None:
        """The user was removed from the project: stop its pushes now (4403: the page stops retrying)."""
        await self.send_json(event)
        await self.close(code=4403)

    async def access_revoked(self, event: dict) -> None:
        """The account was deactivated: close every socket of it (4401: not authenticated any more; the page
        stops retrying, and a reconnect would be refused)."""
        await self.send_json(event)
        await self.close(code=4401)


class NoRouteConsumer(AsyncJsonWebsocketConsumer):
    """Any other WebSocket path: refused at the handshake (HTTP 403), not an exception in the router."""

    async def connect(self) -> None:
        await self.close()
