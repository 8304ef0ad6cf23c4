"""WhiteNoise's static files, as a middleware that runs in Django's async chain.

``whitenoise.middleware.WhiteNoiseMiddleware`` is sync-only.  Under an ASGI server Django then
runs everything inside it as a sync island: a hop into a worker thread for WhiteNoise and a hop
back to the event loop for the async middleware after it, on every request, before the view's own
hop (docs/bench-load.md measured the saving).  This subclass is both sync- and async-capable:
the path lookup is a dictionary read (or WhiteNoise's own finder under ``DEBUG``), the static
answer is built in a thread (rare on the hot path; the browser caches static files), and any
other request goes straight on to the next async middleware.
"""
from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, **kwargs):
        super().__init__(get_response, **kwargs)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
