"""Liveness, readiness, Prometheus metrics and engine state."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.responses import Response

from controlplane.api.deps import (
    AuditDep,
    EnginesDep,
    MetricsDep,
    MetricsScraper,
    ReaderDep,
    in_session,
)
from controlplane.api.errors import documented

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_writable(session: Session) -> None:
    # A no-op write proves the database takes writes (not just reads) right now.
    session.execute(text("UPDATE auth_epoch SET value = value WHERE id = 1"))
    session.commit()


@router.get(
    "/readyz",
    summary="Readiness: engine reachable, database and audit writable",
    responses={503: {"description": "not ready; the body says which check failed"}},
)
async def readyz(request: Request, engines: EnginesDep, audit: AuditDep) -> Response:
    checks: dict[str, Any] = {}
    checks["engine"] = "ok" if engines.any_healthy() else "no healthy engine"
    try:
        await in_session(request, _database_writable)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"not writable: {type(exc).__name__}"
    checks["audit"] = "ok" if audit.healthy else f"not writable: {audit.last_error}"
    ready = all(value == "ok" for value in checks.values())
    body = orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks})
    return Response(body, 200 if ready else 503, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=False,
    dependencies=[MetricsScraper],
)
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/engines",
    summary="Engines: health, load and models",
    tags=["engines"],
    responses=documented(401, 403),
)
async def engines(pool: EnginesDep, _reader: ReaderDep) -> list[dict[str, Any]]:
    return [
        {
            "url": engine.url,
            "healthy": engine.healthy,
            "in_flight": engine.in_flight,
            "capacity": engine.capacity,
            "models": sorted(engine.model_ids),
            "last_error": engine.last_error or None,
        }
        for engine in pool.engines
    ]
