"""Client disconnects free slots (like vLLM); failure injection does what it says."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import openai
import pytest

from tests.enginesim import REPO_ROOT, SimHandle, start_simulator

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_disconnects_while_queued_and_mid_stream_free_slots(fresh_sim: SimHandle) -> None:
    body = {"model": "sim-model", "messages": MESSAGES, "max_tokens": 5000, "stream": True}
    async with aiohttp.ClientSession() as session:

        async def read_two_chunks_then_leave() -> None:
            async with session.post(fresh_sim.url + "/chat/completions", json=body) as resp:
                await resp.content.readline()
                await resp.content.readline()
                await asyncio.sleep(60)  # until cancelled: the client goes away mid-stream

        streams = [asyncio.create_task(read_two_chunks_then_leave()) for _ in range(12)]
        await asyncio.sleep(0.3)  # 4 streaming, 8 queued behind them
        assert fresh_sim.stats()["waiting"] >= 4
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    stats = fresh_sim.wait_idle(timeout=5)
    assert (stats["in_flight"], stats["running"], stats["waiting"]) == (0, 0, 0)
    assert stats["aborted"] == 12
    assert stats["completed"] == 0
    # The slots really are free: a full batch is admitted at once.
    client = openai.AsyncOpenAI(base_url=fresh_sim.url, api_key="x", max_retries=0)
    fresh_sim.reset()
    await asyncio.gather(
        *(client.completions.create(model="sim-model", prompt="go", max_tokens=5) for _ in range(4))
    )
    assert fresh_sim.stats()["max_waiting"] == 0


def test_fail_next_gives_http_errors_then_recovers(
    client: openai.OpenAI, fresh_sim: SimHandle
) -> None:
    fresh_sim.set_faults(fail_next=2, error_status=503)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=2)
        assert caught.value.status_code == 503
    client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=2)
    stats = fresh_sim.stats()
    assert (stats["errors_injected"], stats["completed"]) == (2, 1)


def test_error_rate_one_fails_everything(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    fresh_sim.set_faults(error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="sim-model", prompt="go", max_tokens=2)


def test_drop_cuts_streams_and_plain_responses(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    fresh_sim.set_faults(drop_next=2, drop_after_tokens=3)
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(
            model="sim-model", messages=MESSAGES, max_tokens=50, stream=True
        ):
            received.append(chunk)
    assert len(received) == 3
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=50)
    stats = fresh_sim.wait_idle()
    assert (stats["dropped"], stats["aborted"], stats["in_flight"]) == (2, 0, 0)


def test_delay_and_unhealthy(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    fresh_sim.set_faults(delay_s=0.3, unhealthy=True)
    start = time.perf_counter()
    client.completions.create(model="sim-model", prompt="go", max_tokens=1)
    assert time.perf_counter() - start >= 0.3
    assert httpx.get(fresh_sim.base_url + "/health").status_code == 503


def test_unknown_fault_is_rejected(fresh_sim: SimHandle) -> None:
    resp = httpx.post(fresh_sim.base_url + "/sim/faults", json={"error_rat": 1})
    assert resp.status_code == 400
    assert "unknown fault 'error_rat'" in resp.json()["error"]["message"]
    resp = httpx.post(fresh_sim.base_url + "/sim/faults", json={"error_rate": 2})
    assert "probability" in resp.json()["error"]["message"]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_refuse_connections_then_listen_again() -> None:
    with start_simulator(time_scale=0.01) as sim:
        sim.set_faults(refuse_connections_s=0.5)
        time.sleep(0.15)
        assert refused(sim.port)
        time.sleep(0.6)
        assert not refused(sim.port)
        assert httpx.get(sim.base_url + "/health").status_code == 200


def test_subprocess_mode_with_startup_delay() -> None:
    start = time.perf_counter()
    with start_simulator(mode="subprocess", startup_delay_s=0.6, time_scale=0.01) as sim:
        assert refused(sim.port)
        deadline = time.monotonic() + 5
        while refused(sim.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.perf_counter() - start >= 0.6
        client = openai.OpenAI(base_url=sim.url, api_key="x", max_retries=0)
        reply = client.completions.create(model="sim-model", prompt="go", max_tokens=3)
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 3


def test_cli_rejects_bad_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.enginesim", "--max-num-seqs", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "max_num_seqs must be >= 1" in proc.stderr


def test_stop_kills_streams_at_once_and_the_port_can_be_reused() -> None:
    sim = start_simulator(time_scale=1.0)
    client = openai.OpenAI(base_url=sim.url, api_key="x", max_retries=0)
    stream = client.completions.create(model="sim-model", prompt="go", max_tokens=500, stream=True)
    next(iter(stream))
    start = time.perf_counter()
    sim.stop()
    assert time.perf_counter() - start < 2.0
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(stream)
    assert refused(sim.port)
    with start_simulator(port=sim.port, time_scale=0.01) as again:  # the engine comes back
        assert again.url == sim.url
        assert httpx.get(again.base_url + "/health").status_code == 200


async def test_a_thousand_clients_leaving_at_random_points_leak_nothing() -> None:
    import random

    with start_simulator(mode="subprocess", max_num_seqs=32, time_scale=0.05) as sim:
        body = {"model": "sim-model", "prompt": "go", "max_tokens": 64}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def client(index: int) -> None:
                stream = index % 2 == 0
                async with session.post(
                    sim.url + "/completions", json={**body, "stream": stream}
                ) as resp:
                    if stream:
                        async for _ in resp.content:
                            pass
                    else:
                        await resp.read()

            tasks = [asyncio.create_task(client(i)) for i in range(1000)]
            while (await asyncio.to_thread(sim.stats))["requests"] < 1000:
                await asyncio.sleep(0.05)  # every request has reached the engine
            for task in random.sample(tasks, 700):  # queued, prefilling or mid-decode
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        stats = await asyncio.to_thread(sim.wait_idle, 30)
        assert (stats["in_flight"], stats["running"], stats["waiting"]) == (0, 0, 0)
        assert stats["max_running"] == 32
        finished = sum(1 for r in results if r is None)
        # A client may leave just after the engine finished its answer: counted as completed.
        assert stats["completed"] + stats["aborted"] == stats["requests"] == 1000
        assert stats["completed"] >= finished
        assert stats["aborted"] >= 400  # most were still queued or decoding


def test_idle_keepalive_connections_are_closed_like_vllm() -> None:
    sim = start_simulator(keepalive_s=0.3)
    try:
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(0.8)
            assert conn.recv(4096) == b""  # the server closed the idle connection
    finally:
        sim.stop()


def test_subprocess_simulator_exits_when_its_parent_dies() -> None:
    # A parent that starts a simulator and is killed before it can stop it (a killed test run).
    script = (
        "import os, signal\n"
        "from tests.enginesim import start_simulator\n"
        "sim = start_simulator(mode='subprocess')\n"
        "print(sim.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), "the simulator outlived its parent"
