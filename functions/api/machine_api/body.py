"""Reading a webhook's raw body (the bytes its signature covers), capped by the guard middleware."""

from __future__ import annotations

from fastapi import Request


async def raw_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    async for chunk in request.stream():  # GuardMiddleware's receive raises BodyTooLarge past the cap
        chunks.append(chunk)
    return b"".join(chunks)


def lower_headers(request: Request) -> dict[str, str]:
    return {key.lower(): value for key, value in request.headers.items()}
