"""Fixtures shared by the browser tests."""
import pytest

from tests.browser.labeling_support import chromium_or_skip


@pytest.fixture(scope="module")
def pw():
    """Playwright, per test module, driving Debian's Chromium (skips without either)."""
    with chromium_or_skip()() as p:
        yield p
