"""Issue 12, row 7: a member removed from a project stops receiving its pushes at once.

Their open WebSocket joined a per-member group; removing the membership (service or admin) sends
``membership.revoked`` after commit and the consumer closes the socket with 4403.  Run on the
in-memory layer and on a real Redis channel layer (this session's own Redis database).
"""
import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from annotate import realtime
from annotate.models import Membership
from annotate.routing import websocket_urlpatterns
from annotate.services.roles import membership_remove

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


def test_removing_a_member_in_the_admin_inline_closes_their_socket(layer, make_user, make_project):
    admin = make_user("boss", superuser=True)
    gone = make_user("gone2")
    project = make_project(members=[(gone, Membership.Role.ANNOTATOR)])
    membership = Membership.objects.get(project=project, user=gone)

    async def run():
        a = _connect(project.pk, gone)
        assert (await a.connect())[0]

        def delete_in_admin():
            client = Client()
            client.force_login(admin)
            resp = client.post(f"/admin/annotate/membership/{membership.pk}/delete/", {"post": "yes"})
            assert resp.status_code == 302, resp.content[:300]

        await sync_to_async(delete_in_admin)()
        revoked = await a.receive_json_from(timeout=5)
        assert revoked["type"] == "membership.revoked"
        assert (await a.receive_output(timeout=5))["code"] == 4403
        await a.wait()

    asyncio.run(run())
    assert not Membership.objects.filter(project=project, user=gone).exists()
