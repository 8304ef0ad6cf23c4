"""``python manage.py loupe_serve``: an ASGI server (Uvicorn; ``--server daphne`` for Daphne) serving
``config.asgi`` and, in the embedded default, a Celery worker in a thread of the same process.

Uvicorn is the default because it cost the least CPU per label of the three servers measured
under the same load (Daphne, Uvicorn, Granian: docs/bench-load.md); WebSockets go through its
``websockets`` implementation.

Embedded default (``CELERY_BROKER_URL`` unset, i.e. ``memory://``): the memory broker lives in
this process's memory, so the workers must too.  Two worker lanes run in daemon threads, one per
queue, as the production workers do (README, "Production"): ``gpu`` (rounds, embeddings; the
``solo`` pool, one task at a time) and ``cpu`` (imports, exports, the quality follow-up after each
round).  With one lane for both, a round requested while the previous round's quality task ran
waited for it (docs/bench-rounds.md); now it starts at once.  Tasks that request threads enqueue
reach the lanes through kombu's in-process memory transport.  Channels uses the
in-memory layer; pushes from the worker thread are handed to the server's event loop, recorded
here at start-up (``annotate.realtime``; DESIGN.md "Pitfall (measured)").

With a real broker (Redis/RabbitMQ) the command only serves the web side; run
``celery -A config worker -Q gpu,cpu`` separately (README, "Production").
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("loupe.serve")

SERVERS = ("uvicorn", "daphne")


def start_embedded_worker(*, concurrency: int = 1, loglevel: str = "INFO") -> dict[str, threading.Thread]:
    """Start the embedded Celery workers, one lane per queue (``gpu``, ``cpu``), each in a daemon thread
    of this process.  ``concurrency`` is the ``gpu`` lane's (above 1: the ``threads`` pool); the ``cpu``
    lane runs one task at a time.  Returns the lanes' threads by queue."""
    from celery import Celery  # noqa: PLC0415

    from config.celery import app  # noqa: PLC0415

    if not settings.LOUPE_EMBEDDED_WORKER:
        raise CommandError("an embedded worker needs the memory broker (CELERY_BROKER_URL unset or memory://)")
    # Poll the in-memory queues often: a round should start a moment after the label that asked for it.
    app.conf.broker_transport_options = {**(app.conf.broker_transport_options or {}), "polling_interval": 0.05}

    def lane(queue: str, n: int, lane_app) -> threading.Thread:
        # A worker selects its queues on its app (app.amqp.queues), so two workers of one app in one
        # process both consumed the last one selected: each lane has an app of its own.  The memory
        # broker's queues are shared by the whole process, so a task sent through either app (a view,
        # a round sending its quality follow-up) reaches the lane that consumes its queue.
        lane_app.conf.broker_transport_options = app.conf.broker_transport_options
        worker = lane_app.WorkController(
            hostname=f"{queue}@embedded",
            pool_cls="solo" if n == 1 else "threads",
            concurrency=n,
            queues=[queue],
            loglevel=loglevel,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )

        def run() -> None:
            if queue == "gpu":
                from annotate.warmup import worker_warmup  # noqa: PLC0415

                # torch and the head's first fit here, in the lane's thread while the server starts, not
                # in the first round (annotate/warmup.py); rounds sent meanwhile wait in the memory broker.
                # The cpu lane consumes at once (an import or export needs no torch; a quality task that
                # does waits on the import lock, so nothing is imported twice).
                worker_warmup()
            worker.start()

        thread = threading.Thread(target=run, name=f"loupe-embedded-worker-{queue}", daemon=True)
        thread.start()
        return thread

    cpu_app = Celery(app.main, set_as_current=False)
    cpu_app.config_from_object("django.conf:settings", namespace="CELERY")
    cpu_app.autodiscover_tasks()
    return {"gpu": lane("gpu", concurrency, app), "cpu": lane("cpu", 1, cpu_app)}


def port_check(host: str, port: int) -> None:
    """CommandError unless ``host:port`` can be listened on.

    Checked before anything starts: with the port taken (say, by another ``make run``), Daphne only
    logged "Listen failure" and the command exited 0, after its worker thread had started and
    re-enqueued the rounds and jobs the other server was running as "left over".
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens
            sock.bind(addr)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another server "
                           f"using it? Choose another port (make run PORT=...).") from None


class Command(BaseCommand):
    help = ("Serve Loupe with Uvicorn or Daphne (HTTP + WebSockets); in the embedded default also run a Celery "
            "worker thread.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--server", choices=SERVERS, default="uvicorn",
                            help="the ASGI server (default uvicorn, the cheapest measured: docs/bench-load.md)")
        parser.add_argument("--no-worker", action="store_true", help="do not start the embedded worker thread")
        parser.add_argument("--worker-concurrency", type=int, default=1,
                            help="tasks the embedded gpu lane runs at once (the cpu lane runs one)")
        parser.add_argument("--admin", metavar="USERNAME", default=None,
                            help="make sure this superuser exists and print how to log in (make run does)")

    def handle(self, *args, **opts):
        from annotate.services.jobs import jobs_resume_orphans  # noqa: PLC0415
        from annotate.services.rounds import rounds_resume_orphans  # noqa: PLC0415

        if opts["server"] == "daphne":
            import daphne.server  # noqa: F401, PLC0415 - installs Twisted's asyncio reactor before any reactor import
        port_check(opts["host"], opts["port"])
        embedded = settings.LOUPE_EMBEDDED_WORKER
        if embedded and not opts["no_worker"]:
            start_embedded_worker(concurrency=opts["worker_concurrency"])
            resumed = rounds_resume_orphans()
            if resumed:
                self.stdout.write(f"re-enqueued {len(resumed)} round(s) left over from a previous run")
            # The memory broker lost whatever import/export/embedding jobs the last process held.
            jobs = jobs_resume_orphans()
            if jobs:
                self.stdout.write(f"re-enqueued {len(jobs)} job(s) left over from a previous run")
            mode = "embedded worker threads (gpu and cpu lanes), memory broker"
        elif embedded:
            mode = "no worker (rounds will wait)"
        else:
            mode = f"external worker via {settings.CELERY_BROKER_URL.split('://')[0]}"
        layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
        # Rounds and jobs whose worker is gone are re-run or failed from here too (the web process
        # outlives workers; annotate/services/liveness.py).
        from annotate.services.liveness import start_sweeper  # noqa: PLC0415

        start_sweeper()

        host, port = opts["host"], opts["port"]
        login = ""
        if opts["admin"]:
            from annotate.services.roles import admin_user_ensure  # noqa: PLC0415

            password = admin_user_ensure(username=opts["admin"])
            login = (f"\n  log in as {opts['admin']!r} with password {password}  (new account: shown this once)"
                     if password else
                     f"\n  log in as {opts['admin']!r} (password as set before; "
                     f"python manage.py changepassword {opts['admin']} sets a new one)")

        def ready() -> None:
            self.stdout.write(self.style.SUCCESS(f"Loupe is serving http://{host}:{port}/") + login
                              + f"\n  ({opts['server']}; {mode}; channel layer {layer}; Ctrl+C stops it)")
            self.stdout.flush()

        if opts["server"] == "daphne":
            serve_daphne(host, port, ready=ready, quiet=opts["verbosity"] < 2)
        else:
            serve_uvicorn(host, port, ready=ready, quiet=opts["verbosity"] < 2)


def serve_uvicorn(host: str, port: int, *, ready, quiet: bool) -> None:
    """Uvicorn on ``host:port`` until SIGINT/SIGTERM; the server's event loop is recorded for pushes
    from the embedded worker's thread (``realtime.set_server_loop``) before the first request."""
    import uvicorn  # noqa: PLC0415
    from channels.routing import get_default_application  # noqa: PLC0415

    from annotate import realtime  # noqa: PLC0415

    config = uvicorn.Config(
        get_default_application(), host=host, port=port,
        lifespan="off",  # Channels' router has no lifespan handler
        ws="websockets-sansio", access_log=False, log_level="warning" if quiet else "info",
        # a page's keep-alive connection outlives a think time of a few seconds (Uvicorn's default is 5 s)
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        realtime.set_server_loop(asyncio.get_running_loop())
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            ready()
        await serving

    asyncio.run(main())
    if not server.started:
        raise CommandError(f"Uvicorn could not serve on {host}:{port}; see the log above")


def serve_daphne(host: str, port: int, *, ready, quiet: bool) -> None:
    """Daphne (Twisted) on ``host:port`` until SIGINT/SIGTERM."""
    from channels.routing import get_default_application  # noqa: PLC0415
    from daphne.endpoints import build_endpoint_description_strings  # noqa: PLC0415
    from daphne.server import Server  # noqa: PLC0415
    from twisted.internet import reactor  # noqa: PLC0415  - the asyncio reactor daphne installed

    from annotate import realtime  # noqa: PLC0415

    def record_loop() -> None:
        realtime.set_server_loop(asyncio.get_event_loop())

    reactor.callWhenRunning(record_loop)
    if quiet:  # Daphne's start-up lines would bury the banner
        logging.getLogger("daphne").setLevel(logging.WARNING)
    Server(
        application=get_default_application(),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        signal_handlers=True,
        ready_callable=ready,
        verbosity=1,
    ).run()
