"""Who may read and write: FastAPI dependencies over the ``Authorization: Bearer KEY`` header."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .service import Service, service

bearer = HTTPBearer(auto_error=False, description="The server's API key (--api-key).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
ServiceDep = Annotated[Service, Depends(service)]


def _authorize(svc: Service, credentials: HTTPAuthorizationCredentials | None, write: bool) -> None:
    settings = svc.settings
    key = settings.api_key
    if write and (settings.read_only or not key):
        why = "read-only" if settings.read_only else "started without an API key"
        raise ApiError(403, f"Writes are disabled: the server was {why}.")
    if not key or (not write and settings.public_read):
        return
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise ApiError(401, "This endpoint needs 'Authorization: Bearer KEY'.")
    # header values arrive decoded as latin-1: back to the bytes the client sent, compared with
    # the key's UTF-8 bytes (so a non-ASCII key works), in constant time
    if not hmac.compare_digest(token.encode("latin-1", "replace"), key.encode("utf-8")):
        raise ApiError(401, "The API key is wrong.")


async def read_access(svc: ServiceDep, credentials: Credentials) -> None:
    """Reads need the key when one is set, unless --public-read."""
    _authorize(svc, credentials, write=False)


async def write_access(svc: ServiceDep, credentials: Credentials) -> None:
    """Writes always need the key (403 when none is configured or the server is read-only)."""
    _authorize(svc, credentials, write=True)
