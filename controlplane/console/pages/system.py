"""System page: release and bundle, release history, engine profile and KV plan, TLS, preflight,
and the measured capacity (the latest `sparkplane validate` report and its plots)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import controlplane
from controlplane.appliance.layout import Layout
from controlplane.appliance.system_info import appliance_root, read_system_info
from controlplane.console.deps import Viewer
from controlplane.console.web import render
from controlplane.core.db import utcnow
from controlplane.metering.capacity import CapacityReport, latest_report
from controlplane.metering.capacity_chart import capacity_charts

router = APIRouter()


def capacity_report(root: Path | None) -> CapacityReport | None:
    """The latest `sparkplane validate` report of the appliance, if any."""
    return latest_report(Layout.at(root).reports) if root is not None else None


@router.get("/system")
async def system(request: Request, active: Viewer) -> Response:
    settings = request.app.state.settings
    root = appliance_root(settings)
    info = await run_in_threadpool(read_system_info, root)
    report = await run_in_threadpool(capacity_report, root)
    # The plots escape every label they draw (capacity_chart.py).
    plots = [Markup(svg) for svg in capacity_charts(report.rows)] if report else []  # noqa: S704
    return render(
        request, "system.html", active, section="system", title="System", info=info,
        version=controlplane.__version__, now=utcnow(), engines=settings.engine_urls,
        database=settings.database_url.split(":")[0], capacity=settings.engine_capacity,
        engine_queue=settings.engine_queue, report=report, plots=plots,
    )  # fmt: skip
