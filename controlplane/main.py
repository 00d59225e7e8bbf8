"""`create_app(settings)`: the control plane's FastAPI application and its lifespan."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

import controlplane
from controlplane.admission.local import Admission
from controlplane.api.auth_limit import AuthFailureLimit
from controlplane.api.errors import add_html_error_page, install_error_handlers
from controlplane.api.refusals import RefusalLog
from controlplane.api.routes import docs, health, keys, tenants
from controlplane.api.routes import usage as usage_api
from controlplane.audit import jobs as audit_jobs
from controlplane.audit.bootstrap import audited_database
from controlplane.audit.captured import ContentStore
from controlplane.audit.content import MASTER_KEY_FILE, ContentVault
from controlplane.console import routes as console
from controlplane.core.config import Settings
from controlplane.core.db import session_factory
from controlplane.core.dblock import hold_running_lock
from controlplane.core.security import load_or_create_pepper
from controlplane.engines.pool import EnginePool
from controlplane.gateway import routes as openai
from controlplane.gateway.call import GatewayServices
from controlplane.gateway.ingress import ControlPlaneApp
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger
from controlplane.tenancy.keycache import KeyAuthenticator
from controlplane.tenancy.store import retention_policies

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL = 0.0005  # seconds


def _live_state(services: GatewayServices) -> dict[str, Any]:
    tenants = {
        state.policy.name: (state.in_flight, len(state.queue))
        for state in services.admission.tenants.values()
    }
    engines = {
        engine.url: (engine.healthy, engine.in_flight, engine.capacity)
        for engine in services.engines.engines
    }
    return {"tenants": tenants, "engines": engines}


async def _make_admission(
    settings: Settings,
    engines: EnginePool,
    usage: UsageLedger,
    metrics: Metrics,
    db_engine: Engine,
    stack: AsyncExitStack,
) -> Admission:
    if not settings.uses_database_coordination:
        return Admission(engines, usage, metrics, engine_queue=settings.engine_queue)
    from controlplane.admission.coordinated import CoordinatedAdmission

    admission = CoordinatedAdmission(engines, usage, metrics, db_engine, settings)
    await admission.start()
    stack.push_async_callback(admission.close)
    return admission


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # The audit writer and the usage flush run in threads. By default a thread that wants the
    # GIL back waits up to 5 ms; the event loop, which serves every request, should not.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(audited_database(settings))
        db_engine, audit = database.engine, database.audit
        app.state.pepper = load_or_create_pepper(settings.data_dir)
        stack.callback(hold_running_lock(db_engine).release)  # `sparkplane restore` checks it
        app.state.db_engine = db_engine
        app.state.sessions = session_factory(db_engine)
        app.state.audit = audit
        # Refused credentials: limited per address, audited once per address and window.
        app.state.auth_limit = AuthFailureLimit(
            db_engine, settings.auth_failure_window, settings.auth_failures_per_address
        )
        refusals = RefusalLog(audit, settings.auth_failure_window)
        app.state.refusals = refusals
        stack.push_async_callback(refusals.close)  # before the audit writer stops

        engines = EnginePool(
            settings.engine_urls,
            settings.engine_capacity + settings.engine_queue,
            connect_timeout=settings.engine_connect_timeout,
            health_interval=settings.engine_health_interval,
            keepalive=settings.engine_keepalive,
        )
        stack.push_async_callback(engines.close)
        await engines.start()
        usage = UsageLedger(db_engine, settings.usage_flush_interval)
        await usage.start()
        stack.push_async_callback(usage.close)
        metrics = Metrics()
        admission = await _make_admission(settings, engines, usage, metrics, db_engine, stack)
        authenticator = KeyAuthenticator(db_engine, app.state.pepper)
        await authenticator.start()
        stack.push_async_callback(authenticator.close)
        app.state.authenticator = authenticator

        # Content capture for the tenants that opt in (audit/captured.py); the console's
        # erase and content pages use the same vault.
        app.state.content_vault = ContentVault(db_engine, settings.data_dir / MASTER_KEY_FILE)
        capture = ContentStore(db_engine, app.state.content_vault)
        services = GatewayServices(settings, admission, engines, usage, metrics, audit, capture)
        app.state.gateway = services
        app.state.engines, app.state.metrics = engines, metrics
        metrics.watch(lambda: _live_state(services))

        # Retention schedule and SIEM feed (controlplane/audit/jobs.py).
        def policies() -> dict[str, int]:
            with app.state.sessions() as session:
                return retention_policies(session)

        app.state.audit_jobs = await audit_jobs.start_audit_jobs(
            settings, db_engine, audit, metrics.registry, policies, stack
        )
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise stall the event loop for tens of ms (p99).
        gc.collect()
        gc.freeze()
        log.info(
            "control plane ready: %d engine(s), database %s",
            len(engines.engines),
            db_engine.url.render_as_string(hide_password=True),
        )
        yield


def _include_console(app: FastAPI) -> None:
    app.include_router(console.router)
    add_html_error_page(app, console.PREFIX, console.error_page)

    @app.get("/", include_in_schema=False)
    async def to_console() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    static = Path(console.__file__).resolve().parent / "static"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")


def create_app(settings: Settings) -> FastAPI:
    app = ControlPlaneApp(
        title="Sparkplane control plane",
        version=controlplane.__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(tenants.router)
    app.include_router(keys.router)
    app.include_router(usage_api.router)
    app.include_router(health.router)
    docs.install_docs(app)
    _include_console(app)
    return app
