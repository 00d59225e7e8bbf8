"""Fixtures: real simulators on 127.0.0.1 (thread mode), one per test module or per test."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.enginesim import SimHandle, start_simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    handle = start_simulator(max_num_seqs=4, time_scale=0.01)
    yield handle
    handle.stop()


@pytest.fixture
def fresh_sim(sim: SimHandle) -> SimHandle:
    """The module's simulator with zeroed counters and no faults."""
    sim.set_faults(
        error_rate=0.0,
        fail_next=0,
        error_status=500,
        delay_s=0.0,
        drop_rate=0.0,
        drop_next=0,
        drop_after_tokens=2,
        unhealthy=False,
        tokenize_fail=False,
        tokenize_delay_s=0.0,
    )
    sim.wait_idle()
    sim.reset()
    return sim


@pytest.fixture
def client(fresh_sim: SimHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=fresh_sim.url, api_key="unused", max_retries=0, timeout=10)


@pytest.fixture
def aclient(fresh_sim: SimHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fresh_sim.url, api_key="unused", max_retries=0, timeout=10)
