"""Errors raised by the services for bad input; the API turns them into 4xx JSON.

A service raises before it writes anything (or inside the transaction it rolls back), so a
rejected request leaves stored data exactly as it was.
"""
from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInput(ServiceError):
    """Malformed or out-of-range input (400)."""

    status = 400


class Conflict(ServiceError):
    """The request contradicts the current state: not your lease, already labeled, ... (409)."""

    status = 409


class NotFound(ServiceError):
    """A referenced object does not exist in this project (404)."""

    status = 404
