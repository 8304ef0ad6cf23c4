"""WebSocket URL routes (mounted by ``config/asgi.py``)."""
from django.urls import path, re_path

from .consumers import NoRouteConsumer, ProjectConsumer

websocket_urlpatterns = [
    path("ws/projects/<int:project_id>/", ProjectConsumer.as_asgi(), name="project_ws"),
    re_path(r"", NoRouteConsumer.as_asgi()),  # last: every other path (Channels' router raised: a 500)
]
# So that ``reverse("project_ws", urlconf="annotate.routing", ...)`` builds the URL pages connect to.
urlpatterns = websocket_urlpatterns
