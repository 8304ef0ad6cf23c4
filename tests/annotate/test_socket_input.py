"""Bad input on the WebSocket (found by QA): a frame that is not JSON text closes the socket with 4400
(it raised in the consumer, logged a traceback and dropped the connection without a close frame), and a
path that is no route is refused at the handshake (Channels' router raised: HTTP 500)."""
import asyncio

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from annotate.models import Membership
from annotate.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.parametrize("frame", [{"text_data": "garbage"}, {"text_data": "null"}, {"bytes_data": b"\x00\x01"}])
def test_a_frame_that_is_not_json_text_closes_the_socket_with_4400(memory_layer, make_user, make_project, frame):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)])

    async def run():
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project.pk}/")
        comm.scope["user"] = user
        connected, _ = await comm.connect()
        assert connected
        await comm.send_json_to({"type": "ping", "t": 1})
        assert await comm.receive_json_from() == {"type": "pong", "t": 1}  # the socket works
        await comm.send_to(**frame)
        assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4400}
        await comm.wait()

    asyncio.run(run())


@pytest.mark.parametrize("path", ["/ws/projects/abc/", "/ws/nothing/", "/ws/projects/1/extra/"])
def test_a_path_that_is_no_route_is_refused_at_the_handshake(memory_layer, make_user, path):
    user = make_user("someone")

    async def run():
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        comm.scope["user"] = user
        connected, code = await comm.connect()
        assert not connected and code == 1000

    asyncio.run(run())
