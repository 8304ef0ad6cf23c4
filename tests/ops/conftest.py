"""Fixtures for the production/reliability tests (tests/ops); helpers live in ops_support.py.

Rows come from the shared fixtures of tests/conftest.py (``make_project``, ``make_user``, ``add_member``,
``make_round``).
"""
from __future__ import annotations

