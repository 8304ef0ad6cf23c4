"""What a user sees when a job fails for a reason Loupe did not anticipate.

The exception text of an unexpected failure may carry anything: a traceback, a path, or the bytes
of a file that a hostile model read and put in its error message.  Jobs push their error to the
API and to every member's WebSocket, so such text never goes there: the user gets a generic
message with a short reference, and the full exception goes to the log under that reference.
"""
from __future__ import annotations

import logging
import uuid


def internal_error(*, what: str, exc: BaseException, logger: logging.Logger) -> str:
    """Log ``exc`` with a fresh reference; return the user-facing text naming only ``what`` and the reference."""
    ref = uuid.uuid4().hex[:10]
    logger.error("%s failed (reference %s)", what, ref, exc_info=(type(exc), exc, exc.__traceback__))
    return f"{what} failed because of an internal error (reference {ref}; details are in the worker log)"


def failure_summary(*, what: str, exc: BaseException, logger: logging.Logger) -> str:
    """For work whose inputs are Loupe's own rows and arrays (rounds): the exception's type and the first
    line of its message, never a traceback; the traceback is logged under the reference shown."""
    ref = uuid.uuid4().hex[:10]
    logger.error("%s failed (reference %s)", what, ref, exc_info=(type(exc), exc, exc.__traceback__))
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first} (reference {ref}; the traceback is in the worker log)"
