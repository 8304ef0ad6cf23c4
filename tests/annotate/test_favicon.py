"""Browsers request /favicon.ico on pages without an icon link (Django admin, file downloads)."""
from django.test import Client


def test_favicon_ico_redirects_to_the_static_icon(db):
    resp = Client().get("/favicon.ico")
    assert resp.status_code == 302
    assert resp["Location"] == "/static/favicon.svg"
