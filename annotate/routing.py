"""WebSocket URL routes (mounted by ``config/asgi.py``)."""
from django.urls import path

from .consumers import ProjectConsumer

websocket_urlpatterns = [
    path("ws/projects/<int:project_id>/", ProjectConsumer.as_asgi(), name="project_ws"),
]
# So that ``reverse("project_ws", urlconf="annotate.routing", ...)`` builds the URL pages connect to.
urlpatterns = websocket_urlpatterns
