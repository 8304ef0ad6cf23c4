"""Under ASGI every middleware runs in Django's async chain (config/static_middleware.py): a sync-only
one makes every request hop into a thread and back before its view's own hop (docs/bench-load.md)."""
import asyncio

import pytest
from django.conf import settings
from django.test import AsyncClient
from django.utils.module_loading import import_string


def test_every_middleware_is_async_capable():
    sync_only = [m for m in settings.MIDDLEWARE if not getattr(import_string(m), "async_capable", False)]
    assert sync_only == [], f"sync-only middleware under ASGI: {sync_only}"


@pytest.mark.django_db
def test_static_files_and_views_answer_through_the_async_chain():
    async def run():
        client = AsyncClient()
        static = await client.get("/static/label.js")
        page = await client.get("/accounts/login/")
        return static, page

    static, page = asyncio.run(run())
    assert static.status_code == 200 and "javascript" in static["Content-Type"]
    body = b"".join(static.streaming_content) if static.streaming else static.content
    assert b"function" in body or b"import" in body
    assert page.status_code == 200 and b"password" in page.content.lower()
