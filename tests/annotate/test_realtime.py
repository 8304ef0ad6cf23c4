"""WebSocket consumer and the realtime module (Channels' WebsocketCommunicator, in-memory layer)."""
import asyncio
import threading
import time
import typing

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured

from annotate import realtime
from annotate.consumers import ProjectConsumer
from annotate.models import Membership
from annotate.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def communicator(project_id, user):
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project_id}/")
    comm.scope["user"] = user
    return comm


async def receive_until(comm, type_, timeout=10.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await comm.receive_json_from(timeout=max(0.05, deadline - time.monotonic()))
        seen.append(msg["type"])
        if msg["type"] == type_:
            return msg, seen
    raise AssertionError(f"no {type_} within {timeout}s; got {seen}")


def test_a_member_receives_queue_updated_after_a_round(make_user, make_project, make_round):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)], batch_size=7)

    async def run():
        comm = communicator(project.pk, user)
        connected, _ = await comm.connect()
        assert connected
        rnd = await sync_to_async(make_round)(project)
        msg, seen = await receive_until(comm, "queue.updated")
        await comm.disconnect()
        return rnd, msg, seen

    rnd, msg, seen = asyncio.run(run())
    assert msg["project_id"] == project.pk and msg["round"] == rnd.number
    assert msg["added"] == 7 and msg["pending"] == 7
    assert "round.status" in seen  # progress came before the queue


def test_round_status_reports_progress_and_the_final_state(make_user, make_project, make_round):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)])

    async def run():
        comm = communicator(project.pk, user)
        await comm.connect()
        await sync_to_async(make_round)(project)
        statuses = []
        while True:
            msg = await comm.receive_json_from(timeout=10)
            if msg["type"] == "round.status":
                statuses.append(msg["round"])
            if msg["type"] == "queue.updated":
                break
        await comm.disconnect()
        return statuses

    statuses = asyncio.run(run())
    progress = [s["progress"] for s in statuses if s["status"] == "running"]
    assert progress == sorted(progress) and len(progress) >= 2
    assert statuses[-1]["status"] == "done" and statuses[-1]["progress"] == 1.0


def test_anonymous_users_and_non_members_are_refused(make_user, make_project):
    project = make_project()
    stranger = make_user("stranger")

    async def run():
        out = []
        for user in (AnonymousUser(), stranger):
            comm = communicator(project.pk, user)
            out.append(await comm.connect())
        comm = communicator(999999, stranger)
        out.append(await comm.connect())
        return out

    assert asyncio.run(run()) == [(False, 4401), (False, 4404), (False, 4404)]


def test_a_send_from_a_worker_thread_arrives_at_once(make_user, make_project):
    """DESIGN.md pitfall: a send from another thread must be handed to the server loop, not left
    on the thread's own loop where the consumer would see it only when its loop happens to wake."""
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)])
    latencies = []

    async def run():
        comm = communicator(project.pk, user)
        await comm.connect()
        for _ in range(5):
            sent = {}

            def worker(sent=sent):
                sent["t"] = time.perf_counter()
                realtime.send_queue_updated(project.pk, round_number=1, pending=3, added=3)

            threading.Thread(target=worker).start()
            msg = await comm.receive_json_from(timeout=5)
            latencies.append(time.perf_counter() - sent["t"])
            assert msg["type"] == "queue.updated"
        await comm.disconnect()

    asyncio.run(run())
    assert sorted(latencies)[len(latencies) // 2] < 0.25, latencies


def test_a_missing_channel_layer_fails_loudly(settings):
    settings.CHANNEL_LAYERS = {}
    with pytest.raises(ImproperlyConfigured, match="no channel layer"):
        realtime.send_stats_updated(1, {"labeled": 3})


def test_the_consumer_forwards_every_message_type_realtime_sends():
    """Each typed message (a TypedDict with ``type: Literal[...]``) needs a consumer handler, or
    Channels drops it on the floor with an error in the server log only."""
    messages = [obj for obj in vars(realtime).values()
                if isinstance(obj, type) and typing.is_typeddict(obj) and "type" in obj.__annotations__]
    types = {typing.get_args(typing.get_type_hints(m)["type"])[0] for m in messages}
    assert len(types) == len(messages) >= 4
    missing = [t for t in types if not callable(getattr(ProjectConsumer, t.replace(".", "_"), None))]
    assert not missing, f"no ProjectConsumer handler for {missing}"


def test_after_a_layer_failure_progress_is_skipped_but_the_next_queue_update_is_tried(monkeypatch, settings):
    """The backoff after an outage spares the worker a dead Redis at every progress step, but a one-off
    message (the first queue.updated after the layer is back) is always tried: dropping it lost the push."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    tried: list[str] = []

    def down(layer, group, message):
        tried.append(message["type"])
        raise ConnectionRefusedError("layer down")

    monkeypatch.setattr(realtime, "_outage_until", 0.0)
    monkeypatch.setattr(realtime, "_deliver", down)
    realtime._send(1, {"type": "queue.updated"})  # fails twice (the retry), starts the backoff
    assert tried == ["queue.updated", "queue.updated"] and realtime._outage_until > time.monotonic()

    delivered: list[str] = []
    monkeypatch.setattr(realtime, "_deliver", lambda layer, group, message: delivered.append(message["type"]))
    realtime._send(1, {"type": "round.status"})  # progress inside the backoff: skipped
    realtime._send(1, {"type": "queue.updated"})  # the layer is back: delivered at once
    assert delivered == ["queue.updated"]


def test_stats_pushes_are_coalesced_to_a_few_per_second_with_the_newest_payload(monkeypatch):
    sent: list[tuple[float, dict]] = []
    monkeypatch.setattr(realtime, "_send", lambda pid, message, group=None: sent.append((time.monotonic(),
                                                                                        message["stats"])))
    monkeypatch.setattr(realtime, "_stats_last", {})
    monkeypatch.setattr(realtime, "_stats_waiting", {})
    realtime.send_stats_updated(7, {"n": 0})
    assert [p for _t, p in sent] == [{"n": 0}]  # the first goes at once, in the caller's thread
    for k in range(1, 50):  # a burst: 49 more within the window
        realtime.send_stats_updated(7, {"n": k})
    realtime.send_stats_updated(8, {"n": "other project"})  # another project is not held back
    deadline = time.monotonic() + 10
    while len(sent) < 3 and time.monotonic() < deadline:  # the held one follows after the window
        time.sleep(0.05)
    got = [p for _t, p in sent]
    assert got[0] == {"n": 0} and {"n": "other project"} in got
    ours = [(t, p) for t, p in sent if p != {"n": "other project"}]
    assert [p for _t, p in ours] == [{"n": 0}, {"n": 49}]  # the first at once, then the newest only
    assert ours[1][0] - ours[0][0] >= realtime.STATS_INTERVAL_S * 0.9
