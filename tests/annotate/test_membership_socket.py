"""Issue 12, row 7: a member removed from a project, or a deactivated user, loses access at once.

An open WebSocket joined a per-member group and a per-user group; removing the membership (service or
admin) sends ``membership.revoked`` after commit and the consumer closes the socket with 4403;
deactivating the user (service or admin) sends ``access.revoked`` and every socket of theirs, on any
project, closes with 4401.  Either way their leases go back to the queue at once and their labels stay.
Run on the in-memory layer and on a real Redis channel layer (this session's own Redis database).
"""
import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from annotate import realtime
from annotate.models import Annotation, Membership, QueueEntry
from annotate.routing import websocket_urlpatterns
from annotate.services.annotations import annotation_submit
from annotate.services.queue import queue_lease
from annotate.services.roles import membership_remove, user_deactivate
from annotate.services.tokens import token_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory", "redis"])
def layer(request, settings):
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                               "CONFIG": {"hosts": [url], "prefix": "loupe-revoke-test"}}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


def _connect(project_id, user):
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project_id}/")
    comm.scope["user"] = user
    return comm


def _token_socket(project_id, key):
    return WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project_id}/",
                                 headers=[(b"authorization", f"Token {key}".encode())])


def _queue(project, n=12):
    QueueEntry.objects.bulk_create([QueueEntry(project=project, item=it, rank=k)
                                    for k, it in enumerate(project.items.order_by("pk")[:n])])


def _holds_leases_and_labeled_one(project, user) -> tuple[list[int], int]:
    """``user`` leases 3 items and labels one of them: (the item ids still leased, the labeled item id)."""
    leased = queue_lease(project=project, user=user, n=3)
    annotation_submit(project=project, user=user, item_id=leased[0].item_id, label=project.classes[0],
                      client_id=uuid.uuid4())
    return [e.item_id for e in leased[1:]], leased[0].item_id


def _released(project, item_ids) -> bool:
    rows = QueueEntry.objects.filter(project=project, item_id__in=item_ids)
    return rows.count() == len(item_ids) and all(e.state == "pending" and e.leased_by_id is None for e in rows)


def _still_gets_pushes(comm, project_id) -> bool:
    async def probe():
        await sync_to_async(realtime.send_stats_updated)(project_id, {"probe": 1})
        try:
            msg = await comm.receive_json_from(timeout=1.0)
        except (asyncio.TimeoutError, AssertionError):
            return False
        return msg.get("type") == "stats.updated"
    return probe


def test_removing_a_member_closes_their_socket_and_keeps_the_others(layer, make_user, make_project,
                                                                     django_capture_on_commit_callbacks):
    gone, stays = make_user("gone"), make_user("stays")
    project = make_project(members=[(gone, Membership.Role.ANNOTATOR), (stays, Membership.Role.ANNOTATOR)])
    _queue(project)
    held, labeled = _holds_leases_and_labeled_one(project, gone)
    theirs = [e.item_id for e in queue_lease(project=project, user=stays, n=2)]

    async def run():
        a, b = _connect(project.pk, gone), _connect(project.pk, stays)
        assert (await a.connect())[0] and (await b.connect())[0]
        assert await _still_gets_pushes(a, project.pk)()
        await b.receive_json_from(timeout=2)  # b got that probe too

        def remove():
            with django_capture_on_commit_callbacks(execute=True):
                membership_remove(project=project, user=gone)

        await sync_to_async(remove)()
        revoked = await a.receive_json_from(timeout=5)
        closed = await a.receive_output(timeout=5)
        assert revoked["type"] == "membership.revoked" and revoked["project_id"] == project.pk
        assert closed == {"type": "websocket.close", "code": 4403}
        assert await _still_gets_pushes(b, project.pk)()  # the other member is not affected
        await b.disconnect()
        await a.wait()

    asyncio.run(run())
    # Their leases are back in the queue for others; their label and the other member's leases stay.
    assert _released(project, held)
    assert Annotation.objects.filter(item_id=labeled, annotator=gone, is_current=True).exists()
    assert set(QueueEntry.objects.filter(project=project, leased_by=stays).values_list("item_id", flat=True)) == set(
        theirs)


def _admin_post_closes_the_socket(project, user, admin, url: str, data: dict, *, message: str, code: int):
    """With ``user``'s socket open on ``project``, ``admin`` posts ``data`` to the admin page ``url``
    (answered with a redirect): the socket gets ``message`` and is closed with ``code``."""
    async def run():
        a = _connect(project.pk, user)
        assert (await a.connect())[0]

        def post():
            client = Client()
            client.force_login(admin)
            resp = client.post(url, data)
            assert resp.status_code == 302, resp.content.decode()[-2000:]

        await sync_to_async(post)()
        assert (await a.receive_json_from(timeout=5))["type"] == message
        assert (await a.receive_output(timeout=5)) == {"type": "websocket.close", "code": code}
        await a.wait()

    asyncio.run(run())


def test_removing_a_member_in_the_admin_inline_closes_their_socket(layer, make_user, make_project):
    admin = make_user("boss", superuser=True)
    gone = make_user("gone2")
    project = make_project(members=[(gone, Membership.Role.ANNOTATOR)])
    membership = Membership.objects.get(project=project, user=gone)
    _admin_post_closes_the_socket(project, gone, admin, f"/admin/annotate/membership/{membership.pk}/delete/",
                                  {"post": "yes"}, message="membership.revoked", code=4403)
    assert not Membership.objects.filter(project=project, user=gone).exists()


def test_deactivating_a_user_closes_all_their_sockets_and_releases_their_leases(
        layer, make_user, make_project, django_capture_on_commit_callbacks):
    """Sockets on two projects (one by session, one by API token) close with 4401; a colleague's stays open."""
    gone, stays = make_user("leaver"), make_user("colleague")
    p1 = make_project(members=[(gone, Membership.Role.ANNOTATOR), (stays, Membership.Role.ANNOTATOR)])
    p2 = make_project(members=[(gone, Membership.Role.REVIEWER)])
    for p in (p1, p2):
        _queue(p)
    held1, labeled = _holds_leases_and_labeled_one(p1, gone)
    held2 = [e.item_id for e in queue_lease(project=p2, user=gone, n=2)]
    _, key = token_create(user=gone)

    async def run():
        a1, a2, b = _connect(p1.pk, gone), _token_socket(p2.pk, key), _connect(p1.pk, stays)
        for comm in (a1, a2, b):
            assert (await comm.connect())[0]

        def deactivate():
            with django_capture_on_commit_callbacks(execute=True):
                assert user_deactivate(user=gone) == 4

        await sync_to_async(deactivate)()
        for comm in (a1, a2):
            assert (await comm.receive_json_from(timeout=5))["type"] == "access.revoked"
            assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
            await comm.wait()
        assert await _still_gets_pushes(b, p1.pk)()
        await b.disconnect()
        again = _token_socket(p2.pk, key)  # and the token no longer opens one
        assert await again.connect() == (False, 4401)

    asyncio.run(run())
    assert _released(p1, held1) and _released(p2, held2)
    assert Annotation.objects.filter(item_id=labeled, annotator=gone, is_current=True).exists()


def test_deactivating_a_user_in_the_admin_closes_their_socket(layer, make_user, make_project):
    root = make_user("root", superuser=True)
    gone = make_user("leaver2")
    project = make_project(members=[(gone, Membership.Role.ANNOTATOR)])
    _queue(project)
    held = [e.item_id for e in queue_lease(project=project, user=gone, n=3)]
    when = {"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    _admin_post_closes_the_socket(  # the change form posted without is_active: unchecked
        project, gone, root, f"/admin/auth/user/{gone.pk}/change/",
        {"username": gone.username, **when, **{f"initial-{k}": v for k, v in when.items()}},
        message="access.revoked", code=4401)
    gone.refresh_from_db()
    assert not gone.is_active and _released(project, held)
