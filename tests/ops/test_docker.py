"""The container stack as far as it can be checked without a Docker engine.

There is no Docker engine on the CI machine, so these tests check what can be checked here:
the compose file parses and names the right services, commands, queues, volumes and health
checks; its environment yields valid production settings; the images' build step is the script
this test runs (docker/build-check.sh); the entrypoint really applies migrations; the web
health check tells a healthy server from a broken one.  Building and starting the images is
not done here (docs/deploy.md says so).
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PY = sys.executable
MEDIA_PATH = "/var/lib/loupe/media"


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that understands compose's ``!reset`` / ``!override`` merge tags."""


def _tagged(loader, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_scalar(node)
    return {"__tag__": node.tag, "value": value}


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def load_compose(name: str = "compose.yaml") -> dict:
    with open(DOCKER / name, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def _command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def _option(cmd: list[str], *names: str) -> str | None:
    for i, part in enumerate(cmd):
        for name in names:
            if part == name and i + 1 < len(cmd):
                return cmd[i + 1]
            if part.startswith(name + "="):
                return part.split("=", 1)[1]
    return None


def _interpolate(value: str) -> str:
    """Compose-style ``${VAR:-default}`` / ``${VAR:?err}`` with only the defaults (no .env)."""

    def repl(match: re.Match) -> str:
        body = match.group(1)
        if ":-" in body:
            return body.split(":-", 1)[1]
        if ":?" in body:
            return "test-secret-" + "x" * 50  # a required variable: give it a value
        return ""

    return re.sub(r"\$\{([^}]*)\}", repl, str(value)).replace("$$", "$")


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(v) for k, v in env.items()}


def _dockerfile(name: str) -> str:
    text = (DOCKER / name).read_text(encoding="utf-8")
    return text.replace("\\\n", " ")  # join continuation lines


def _instructions(text: str, keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(keyword + " ")]


# --------------------------------------------------------------------------- compose: services


def test_compose_names_the_full_stack(compose):
    assert set(compose["services"]) == {"db", "redis", "web", "worker", "gpu-worker", "rabbitmq"}
    # RabbitMQ is the optional second broker: only with `--profile rabbitmq`.
    assert compose["services"]["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert all("profiles" not in s for n, s in compose["services"].items() if n != "rabbitmq")
    assert compose["services"]["db"]["image"].startswith("postgres:")
    assert compose["services"]["redis"]["image"].startswith("redis:")


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"service {name} has no health check"
        test = check["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, f"service {name}: malformed health check {test}"


def test_web_runs_uvicorn_on_the_asgi_app_after_migrations(compose):
    web = compose["services"]["web"]
    cmd = _command(web)
    assert cmd[0] == "uvicorn" and cmd[-1] == "config.asgi:application"
    assert _option(cmd, "--host") == "0.0.0.0" and _option(cmd, "--lifespan") == "off"
    assert _option(cmd, "--ws") == "websockets-sansio" and "--proxy-headers" in cmd
    assert _environment(web)["LOUPE_MIGRATE"] == "1"
    # the measured configuration: two Uvicorn worker processes unless LOUPE_WEB_PROCESSES says otherwise
    assert _environment(web)["WEB_CONCURRENCY"] == "2" and "--workers" not in cmd
    assert web["healthcheck"]["test"][1:] == ["python", "docker/healthcheck.py"]
    assert any(str(p).endswith(":8000") for p in web["ports"])
    # db and redis must be healthy before web starts (it migrates on start).
    assert web["depends_on"]["db"]["condition"] == "service_healthy"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name,queue,node", [("worker", "cpu", "cpu"), ("gpu-worker", "gpu", "gpu")])
def test_workers_consume_their_queue_and_are_pinged_by_node_name(compose, name, queue, node):
    service = compose["services"][name]
    cmd = _command(service)
    assert cmd[:4] == ["celery", "-A", "config", "worker"], cmd
    assert _option(cmd, "--queues", "-Q") == queue
    assert _option(cmd, "--hostname", "-n") == f"{node}@%h"
    # Only web migrates; workers start once web is healthy, i.e. after the migrations.
    assert _environment(service)["LOUPE_MIGRATE"] == "0"
    assert service["depends_on"]["web"]["condition"] == "service_healthy"
    check = " ".join(service["healthcheck"]["test"][1:])
    assert "inspect ping" in check and f"{node}@$$HOSTNAME" in check


def test_every_routed_queue_has_a_consumer_and_the_issue_routes_hold(compose, settings):
    routes = settings.CELERY_TASK_ROUTES
    # Issue 6 item 2: training/selection/embedding on gpu, import/export on cpu.
    assert routes["annotate.tasks.round_run"]["queue"] == "gpu"
    assert routes["annotate.tasks.embedding_compute"]["queue"] == "gpu"
    assert routes["annotate.tasks.import_run"]["queue"] == "cpu"
    assert routes["annotate.tasks.export_run"]["queue"] == "cpu"
    consumed = {_option(_command(s), "--queues", "-Q") for n, s in compose["services"].items()
                if n in ("web", "worker", "gpu-worker")}
    routed = {r["queue"] for r in routes.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed <= consumed, f"queues {routed - consumed} have no worker in compose.yaml"


def test_gpu_worker_reserves_an_nvidia_gpu_and_uses_the_cuda_image(compose):
    gpu = compose["services"]["gpu-worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert _environment(gpu)["SELECTION_DEVICE"] == "cuda"
    # One task at a time on one GPU: two selections must not share its memory.
    assert _option(_command(gpu), "--concurrency", "-c") == "1"


def test_media_volume_is_shared_by_web_and_workers(compose):
    assert "media" in compose["volumes"]
    for name in ("web", "worker", "gpu-worker"):
        service = compose["services"][name]
        assert f"media:{MEDIA_PATH}" in service["volumes"], f"{name} does not mount the media volume"
        assert _environment(service)["MEDIA_ROOT"] == MEDIA_PATH
    # The database keeps its data in a named volume too.
    assert any(str(v).startswith("pgdata:") for v in compose["services"]["db"]["volumes"])


def test_all_app_services_share_one_production_configuration(compose):
    envs = {name: _environment(compose["services"][name]) for name in ("web", "worker", "gpu-worker")}
    keys = ("LOUPE_PRODUCTION", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY")
    for key in keys:
        values = {name: env.get(key) for name, env in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"
    web = envs["web"]
    assert web["LOUPE_PRODUCTION"] == "1"
    assert web["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in web["DATABASE_URL"]
    assert web["CELERY_BROKER_URL"].startswith("redis://redis:6379/")  # the default; RabbitMQ by .env
    assert web["REDIS_URL"].startswith("redis://redis:6379/")
    # Broker and channel layer on different Redis databases: neither can flush the other's keys.
    assert web["CELERY_BROKER_URL"] != web["REDIS_URL"]
    # SECRET_KEY has no default: compose refuses to start without one.
    raw_secret = compose["x-loupe-env"]["SECRET_KEY"]
    assert raw_secret.startswith("${SECRET_KEY:?")


def test_compose_environment_gives_valid_production_settings(compose, tmp_path):
    """The settings module accepts the compose environment with production on (in a subprocess)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "REDIS_URL"))}
    env.update(_environment(compose["services"]["web"]))
    env["MEDIA_ROOT"] = str(tmp_path / "media")
    env["LOUPE_VAR_DIR"] = str(tmp_path)
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({'debug': s.DEBUG, 'engine': s.DATABASES['default']['ENGINE'],"
        "'host': s.DATABASES['default']['HOST'], 'broker': s.CELERY_BROKER_URL,"
        "'layer': s.CHANNEL_LAYERS['default']['BACKEND'], 'embedded': s.LOUPE_EMBEDDED_WORKER,"
        "'hosts': s.ALLOWED_HOSTS, 'session_secure': s.SESSION_COOKIE_SECURE,"
        "'csrf_secure': s.CSRF_COOKIE_SECURE}))"
    )
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    out = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["debug"] is False
    assert got["engine"] == "django.db.backends.postgresql" and got["host"] == "db"
    assert got["broker"].startswith("redis://") and got["embedded"] is False
    assert got["layer"] == "channels_redis.core.RedisChannelLayer"
    assert "localhost" in got["hosts"] and "*" not in got["hosts"]
    assert got["session_secure"] is True and got["csrf_secure"] is True


def test_cpu_override_serves_the_gpu_queue_without_a_gpu():
    override = load_compose("compose.cpu.yaml")["services"]["gpu-worker"]
    assert override["deploy"]["__tag__"] == "!reset"
    assert override["build"]["dockerfile"] == "docker/Dockerfile"
    assert override["environment"]["SELECTION_DEVICE"] == "cpu"


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_images_run_the_build_check_and_the_migrating_entrypoint(name):
    text = _dockerfile(name)
    runs = _instructions(text, "RUN")
    assert any("sh docker/build-check.sh" in r for r in runs), f"{name} does not run docker/build-check.sh"
    assert _instructions(text, "ENTRYPOINT") == ['["/opt/loupe/docker/entrypoint.sh"]']
    assert _instructions(text, "USER") == ["loupe"]
    # Same uid in both images, so both may write the shared media volume.
    assert any("--uid 1000" in r for r in runs)
    assert any(f"mkdir -p {MEDIA_PATH}" in r for r in runs)


def test_web_image_installs_cpu_torch_and_the_pinned_requirements():
    runs = _instructions(_dockerfile("Dockerfile"), "RUN")
    install = next(r for r in runs if "pip install" in r)
    assert "download.pytorch.org/whl/cpu" in install and "torch==" in install
    assert "pip install -r requirements.txt" in install
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert f"torch=={torch_pin}" in install, "the image's torch differs from requirements.txt"


def test_gpu_image_is_cuda_based_with_cuda_torch_and_cupy():
    text = _dockerfile("Dockerfile.gpu")
    base = _instructions(text, "FROM")[0]
    assert base.startswith("nvidia/cuda:")
    cuda_major = re.match(r"nvidia/cuda:(\d+)\.", base).group(1)
    runs = " ".join(_instructions(text, "RUN"))
    assert "pip install -r requirements-gpu.txt" in runs
    assert "torch.version.cuda" in runs  # the build fails on a CPU-only torch
    gpu_reqs = (ROOT / "requirements-gpu.txt").read_text()
    cupy = re.search(r"^cupy-cuda(\d+)x(\[[a-z,]+\])?==(\d+\.\d+\.\d+)$", gpu_reqs, re.M)
    assert cupy, "requirements-gpu.txt must pin cupy-cudaNNx==X.Y.Z"
    # CuPy is built for the same CUDA major as the base image (and PyPI's torch 2.13 is CUDA 13).
    assert cupy.group(1) == cuda_major


def test_multigpu_override_reserves_every_gpu_and_installs_mpi():
    override = load_compose("compose.multigpu.yaml")["services"]["gpu-worker"]
    devices = override["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["count"] == "all" and devices[0]["capabilities"] == ["gpu"]
    assert override["shm_size"] and "LOUPE_MPI_TIMEOUT" in override["environment"]
    runs = " ".join(_instructions(_dockerfile("Dockerfile.gpu"), "RUN"))
    assert "openmpi-bin" in runs and "-r requirements-mpi.txt" in runs


def test_all_requirements_are_pinned():
    for name in ("requirements.txt", "requirements-gpu.txt", "requirements-dev.txt", "requirements-mpi.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r "):
                continue
            pinned = re.match(r"^[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[0-9][^\s]*$", line)
            assert pinned, f"{name}: {line!r} is not pinned"


def test_build_check_script_passes_here(tmp_path):
    """The exact script both images run at build time (so CI and the image build agree)."""
    env = dict(os.environ)
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "LOUPE_PRODUCTION"):
        env.pop(key, None)
    env.update(
        SECRET_KEY="build-only-not-secret",
        LOUPE_VAR_DIR=str(tmp_path),
        STATIC_ROOT=str(tmp_path / "static"),
        PYTHON=PY,
        PATH=f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    out = subprocess.run(["sh", str(DOCKER / "build-check.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "build-check: ok" in out.stdout
    assert any((tmp_path / "static").rglob("*")), "collectstatic wrote nothing"


@pytest.mark.parametrize("migrate", ["1", "0"])
def test_entrypoint_applies_migrations_only_when_asked(tmp_path, migrate):
    env = dict(os.environ)
    for key in ("CELERY_BROKER_URL", "REDIS_URL", "LOUPE_PRODUCTION"):
        env.pop(key, None)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SECRET_KEY="entrypoint-test",
        LOUPE_VAR_DIR=str(tmp_path),
        LOUPE_MIGRATE=migrate,
        PATH=f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    # `migrate --check` exits non-zero while any migration is unapplied.
    out = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "python", "manage.py", "migrate", "--check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    if migrate == "1":
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        assert out.returncode != 0, "without LOUPE_MIGRATE the database should be left unmigrated"


# --------------------------------------------------------------------------- health check script


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    seen_proto: list[str] = []

    def do_GET(self):
        self.seen_proto.append(self.headers.get("X-Forwarded-Proto", ""))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,healthy", [(200, True), (500, False), (404, False)])
def test_web_health_check_tells_healthy_from_broken(status, healthy):
    handler = type("H", (_Handler,), {"status": status, "seen_proto": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/admin/login/"
        out = subprocess.run([PY, str(DOCKER / "healthcheck.py"), url], capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
    assert (out.returncode == 0) is healthy, out.stdout + out.stderr
    assert handler.seen_proto == ["https"]  # so SECURE_SSL_REDIRECT does not answer 301


def test_web_health_check_fails_when_nothing_listens():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([PY, str(DOCKER / "healthcheck.py"), f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "unreachable" in out.stdout


def test_web_health_check_url_answers_200_in_production_mode(compose, tmp_path):
    """What docker/healthcheck.py asks for (localhost, /admin/login/, X-Forwarded-Proto: https) gets a
    200 from the app under compose's production environment, even with SECURE_SSL_REDIRECT on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "REDIS_URL"))}
    env.update(_environment(compose["services"]["web"]))
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", REDIS_URL="", CELERY_BROKER_URL="memory://",
               LOUPE_VAR_DIR=str(tmp_path), MEDIA_ROOT=str(tmp_path / "media"), SECURE_SSL_REDIRECT="1",
               DJANGO_SETTINGS_MODULE="config.settings",
               DB_POOL="0")  # compose's web pools PostgreSQL connections; this check runs on SQLite
    code = (
        "import django; django.setup(); from django.test import Client; c = Client();"
        "ok = c.get('/admin/login/', HTTP_HOST='localhost:8000', HTTP_X_FORWARDED_PROTO='https');"
        "plain = c.get('/admin/login/', HTTP_HOST='localhost:8000');"
        "print(ok.status_code, plain.status_code)"
    )
    out = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ok, plain = out.stdout.split()[-2:]
    assert ok == "200"
    assert plain == "301"  # without the proxy's header the redirect to https would fail the check
