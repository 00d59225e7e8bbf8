"""Capacity in the console: the System page's report and plots, each tenant's share of the
measured capacity on the dashboard, the usage page's per-tenant chart, and the system tenant."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import openai

from controlplane.appliance.layout import Layout
from controlplane.appliance.system_info import appliance_root
from controlplane.tenancy import actions
from tests.controlplane.console.client import ConsoleClient
from tests.controlplane.console.server import ConsoleServer
from tests.controlplane.console.test_pages import assert_same_origin
from tests.controlplane.console.test_tenant_pages import create_key, create_tenant
from tests.controlplane.metering.test_capacity import report_at


def reports_of(server: ConsoleServer) -> Layout:
    root = appliance_root(server.settings)
    assert root is not None
    return Layout.at(root)


def complete(server: ConsoleServer, key: str, times: int = 1) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    for _ in range(times):
        client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=61
        )


def test_the_system_page_shows_the_latest_report_and_its_plots(
    auditor: ConsoleClient, server: ConsoleServer
) -> None:
    assert "no report yet: run sparkplane validate" in auditor.get("/system").text
    path = report_at(reports_of(server).reports, datetime(2026, 12, 2, tzinfo=UTC))
    page = auditor.get("/system").text
    assert path.name in page and "checks passed" in page and "peak 61 tok/s" in page
    assert page.count("<polyline") == 4  # 3 rate curves + TTFT
    assert '<td class="num">61.0</td>' in page and "0.984" in page
    assert_same_origin(page)


def test_the_dashboard_shows_each_tenants_share_of_the_capacity(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    report_at(reports_of(server).reports, datetime(2026, 12, 3, tzinfo=UTC))  # peak 61 tok/s
    tenant = create_tenant(admin, server)
    complete(server, create_key(admin, tenant), times=2)  # 122 completion tokens
    time.sleep(0.6)  # the usage ledger flushes every 0.2 s
    page = admin.get("/").text
    section = page[page.index('id="capacity-share"') :]
    row = section[section.index(f">{tenant}</a>") :].split("</tr>", 1)[0]
    # Now: 122 tokens over the 60 s window = 2.03 tok/s = 3.3 % of 61 tok/s; 24 h: from the
    # ledger, 122 tokens / 86,400 s = 0.00 tok/s, 0.0 %.
    cells = [cell.split(">")[-1] for cell in row.split("</td>")[1:5]]
    assert cells == ["2.03", "3.3 %", "0.00", "0.0 %"], row
    assert "peak measured by <code>sparkplane validate</code>: 61 tok/s" in section


def test_the_system_tenant_is_shown_not_counted_and_cannot_be_disabled_or_erased(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    name = server.unique("sparkplane-system-")
    created = actions.create_tenant(server.settings, name, system=True, max_concurrency=4)
    assert created.system
    assert 'badge muted">system' in admin.get("/tenants").text
    detail = admin.get(f"/tenants/{name}").text
    assert "cannot be disabled or erased" in detail
    assert f"/tenants/{name}/disable" not in detail and f"/tenants/{name}/erase" not in detail
    refused = admin.post(f"/tenants/{name}/disable", page=f"/tenants/{name}")
    assert refused.status_code == 409 and "cannot be disabled" in refused.text
    erase = admin.post(f"/tenants/{name}/erase", {"confirm_name": name}, page=f"/tenants/{name}")
    assert erase.status_code == 400 and "cannot be erased" in erase.text
    assert not admin.get(f"/tenants/{name}").text.count('badge bad">disabled')
    complete(server, create_key(admin, name))
    time.sleep(0.6)
    usage = admin.get("/usage", params={"tenant": name}).text
    assert f'{name}</a> <span class="badge muted">system' in usage
    assert usage.count('<div class="value">0</div>') == 3, "totals leave the system tenant out"
    assert "Tokens per tenant over time" in usage and "<polyline" in usage


def test_the_usage_page_draws_one_line_per_tenant(
    admin: ConsoleClient, server: ConsoleServer
) -> None:
    tenants = [create_tenant(admin, server) for _ in range(2)]
    for tenant in tenants:
        complete(server, create_key(admin, tenant))
    time.sleep(0.6)
    page = admin.get("/usage").text
    chart = page[page.index('id="tenant-tokens"') :].split("</svg>", 1)[0]
    for tenant in tenants:
        assert f">{tenant}</text>" in chart
    assert chart.count("<polyline") >= 2
    assert_same_origin(page)
