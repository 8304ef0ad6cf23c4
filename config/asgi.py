"""ASGI entry point: HTTP through Django (signed image URLs before it), WebSockets through Channels."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from annotate.image_urls import ImagesFirst  # noqa: E402
from annotate.routing import websocket_urlpatterns  # noqa: E402
from config.bodylimit import BodyLimitMiddleware, install_daphne_guard  # noqa: E402

install_daphne_guard()  # Daphne buffers a body before the application sees it: bound it as it arrives

application = ProtocolTypeRouter(
    {
        # Signed image URLs are answered before Django (no request object, session or query).
        "http": ImagesFirst(BodyLimitMiddleware(django_asgi_app)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
