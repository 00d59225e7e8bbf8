"""max-num-seqs, the waiting queue, the latency model and per-tenant counters."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tests.enginesim import SimHandle, start_simulator
from tests.enginesim.model import LatencyModel, SimOptions

MESSAGES = [{"role": "user", "content": "hi"}]


def test_decode_rate_is_calibrated_on_the_design_numbers() -> None:
    model = LatencyModel(SimOptions())
    assert model.decode_rate(1) == pytest.approx(32.0)
    assert model.decode_rate(16) == pytest.approx(18.0)
    assert 18.0 > model.decode_rate(32) > 10.0  # keeps falling past 16 ...
    assert 32 * model.decode_rate(32) > 16 * model.decode_rate(16)  # ... total still grows
    assert model.prefill_seconds(2100) == pytest.approx(1.0)
    assert LatencyModel(SimOptions(time_scale=0.01)).token_interval(1) == pytest.approx(0.01 / 32)


def test_bad_options_are_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="unknown simulator option"):
        start_simulator(max_num_seq=3)
    with pytest.raises(ValueError, match="max_num_seqs must be >= 1"):
        start_simulator(max_num_seqs=0)


async def test_max_num_seqs_caps_running_and_queues_the_rest(
    aclient: openai.AsyncOpenAI, fresh_sim: SimHandle
) -> None:
    async def one() -> None:
        # ~60 ms each at the module's time scale: long enough that all ten overlap even when
        # a busy machine is slow to send them.
        await aclient.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=200)

    await asyncio.gather(*(one() for _ in range(10)))
    stats = fresh_sim.stats()
    assert stats["max_running"] == 4  # the module's simulator has max_num_seqs=4
    assert stats["max_in_flight"] == 10
    assert stats["max_waiting"] == 6
    assert (stats["completed"], stats["in_flight"], stats["running"]) == (10, 0, 0)


@pytest.mark.timing
def test_single_stream_latency_follows_the_model() -> None:
    # time_scale 0.25: 32 tokens alone take 31 intervals of 0.25/32 s, prefill is ~0.
    with start_simulator(time_scale=0.25) as sim:
        client = openai.OpenAI(base_url=sim.url, api_key="x", max_retries=0)
        start = time.perf_counter()
        client.completions.create(model="sim-model", prompt="go", max_tokens=32)
        elapsed = time.perf_counter() - start
    assert 31 * 0.25 / 32 * 0.9 < elapsed < 31 * 0.25 / 32 * 1.3


@pytest.mark.timing
async def test_sixteen_streams_decode_slower_each() -> None:
    # time_scale 0.4, not faster: the client's own per-request cost (16 SDK calls at once on a
    # slow, busy core) must stay small next to the decode time being compared.
    with start_simulator(time_scale=0.4) as sim:
        client = openai.AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0)

        async def timed() -> float:
            start = time.perf_counter()
            await client.completions.create(model="sim-model", prompt="go", max_tokens=33)
            return time.perf_counter() - start

        alone = await timed()
        together = await asyncio.gather(*(timed() for _ in range(16)))
    slowdown = (sum(together) / len(together)) / alone
    assert 32 / 18 * 0.85 < slowdown < 32 / 18 * 1.2  # per-stream 32 -> 18 tok/s


async def test_per_tenant_peaks_come_from_header_or_user_field(
    aclient: openai.AsyncOpenAI, fresh_sim: SimHandle
) -> None:
    async def one(tenant: str, via_header: bool) -> None:
        extra = (
            {"extra_headers": {"X-Sparkplane-Tenant": tenant}} if via_header else {"user": tenant}
        )
        await aclient.chat.completions.create(
            model="sim-model", messages=MESSAGES, max_tokens=10, **extra
        )

    await asyncio.gather(
        *(one("acme", True) for _ in range(3)), *(one("globex", False) for _ in range(2))
    )
    tenants = fresh_sim.stats()["tenants"]
    assert tenants["acme"]["max_in_flight"] == 3
    assert tenants["globex"]["max_in_flight"] == 2
    assert tenants["acme"]["completed"] == 3
    assert tenants["acme"]["generation_tokens"] == 30
    assert tenants["acme"]["slot_seconds"] > 0


async def test_reset_zeroes_counters(aclient: openai.AsyncOpenAI, fresh_sim: SimHandle) -> None:
    await aclient.completions.create(model="sim-model", prompt="go", max_tokens=2)
    assert fresh_sim.stats()["completed"] == 1
    after = fresh_sim.reset()
    assert (after["completed"], after["max_in_flight"], after["tenants"]) == (0, 0, {})


async def test_reset_while_busy_keeps_tenant_counts_consistent(
    aclient: openai.AsyncOpenAI, fresh_sim: SimHandle
) -> None:
    async def one() -> None:
        await aclient.completions.create(model="sim-model", prompt="go", max_tokens=400, user="t")

    batch = [asyncio.create_task(one()) for _ in range(3)]
    await asyncio.sleep(0.05)
    await asyncio.to_thread(fresh_sim.reset)
    await asyncio.gather(*batch)
    stats = fresh_sim.stats()
    tenant = stats["tenants"]["t"]
    assert (tenant["in_flight"], tenant["max_in_flight"], tenant["completed"]) == (0, 3, 3)
    # Per-tenant slot time covers the same window as the engine's busy time.
    assert tenant["slot_seconds"] == pytest.approx(stats["busy_slot_seconds"], rel=0.05)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("priority", ["p-1", "p3", "p5a", "p5b"]), ("fcfs", ["p5a", "p3", "p-1", "p5b"])],
)
async def test_the_priority_policy_serves_the_queue_smallest_priority_first(
    policy: str, expected: list[str]
) -> None:
    """As vLLM's --scheduling-policy priority: with the one slot busy, waiting requests start in
    order of their `priority` (ties by arrival); first come first served by default."""
    finished: list[str] = []
    with start_simulator(max_num_seqs=1, time_scale=0.05, scheduling_policy=policy) as sim:
        client = openai.AsyncOpenAI(base_url=sim.url, api_key="x", max_retries=0)

        async def one(name: str, priority: int, tokens: int = 4) -> None:
            await client.chat.completions.create(
                model="sim-model",
                messages=MESSAGES,
                max_tokens=tokens,
                extra_body={"priority": priority},
            )
            finished.append(name)

        first = asyncio.create_task(one("busy", 0, tokens=60))  # holds the slot
        while sim.stats()["running"] == 0:
            await asyncio.sleep(0.005)
        waiting = []
        for name, priority in (("p5a", 5), ("p3", 3), ("p-1", -1), ("p5b", 5)):
            waiting.append(asyncio.create_task(one(name, priority)))
            while sim.stats()["waiting"] < len(waiting):  # arrivals in this order
                await asyncio.sleep(0.005)
        await asyncio.gather(first, *waiting)
        await client.close()
    assert finished == ["busy", *expected]


def test_a_priority_that_is_not_an_integer_is_refused(sim: SimHandle) -> None:
    client = openai.OpenAI(base_url=sim.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="priority"):
        client.chat.completions.create(
            model="sim-model", messages=MESSAGES, max_tokens=1, extra_body={"priority": "high"}
        )
