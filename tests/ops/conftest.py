"""Fixtures for the production/reliability tests (tests/ops); helpers live in ops_support.py.

Rows come from the shared fixtures of tests/conftest.py (``make_project``, ``make_user``, ``make_round``).
"""
from __future__ import annotations

import pytest


@pytest.fixture
def add_member(db):
    """``add_member(project, username, role)`` -> the user (created if new) with that role in the project."""
    from django.contrib.auth import get_user_model  # noqa: PLC0415

    from annotate.models import Membership  # noqa: PLC0415

    def add(project, username: str, role: str = "annotator"):
        user, _ = get_user_model().objects.get_or_create(username=username)
        Membership.objects.create(project=project, user=user, role=role)
        return user

    return add
