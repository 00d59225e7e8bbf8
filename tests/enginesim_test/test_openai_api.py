"""The simulator speaks OpenAI as vLLM does: checked with the official openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.enginesim import SimHandle, start_simulator

MESSAGES = [{"role": "user", "content": "Say something about fair sharing."}]


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["sim-model"]


def test_chat_plain_returns_max_tokens_words_and_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=7)
    assert reply.object == "chat.completion"
    assert reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].message.content.split()) == 7
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 7
    assert reply.usage.prompt_tokens > 0


def test_chat_stream_with_usage_and_done(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    stream = client.chat.completions.create(
        model="sim-model",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len(content) == 5
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert fresh_sim.stats()["generation_tokens"] == 5


def test_raw_stream_ends_with_done_and_has_no_usage_unless_asked(fresh_sim: SimHandle) -> None:
    body = {"model": "sim-model", "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", fresh_sim.url + "/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert len(payloads) == 3
    assert all("usage" not in p for p in payloads)


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="sim-model", prompt="Once upon", max_tokens=4)
    assert plain.object == "text_completion"
    assert len(plain.choices[0].text.split()) == 4
    streamed = client.completions.create(
        model="sim-model",
        prompt="Once upon",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_embeddings_are_deterministic_unit_vectors(client: openai.OpenAI) -> None:
    first = client.embeddings.create(model="sim-model", input=["alpha", "beta"])
    again = client.embeddings.create(model="sim-model", input="alpha")
    assert len(first.data) == 2
    vector = first.data[0].embedding
    assert len(vector) == 16
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-4
    assert again.data[0].embedding == pytest.approx(vector, abs=1e-6)
    assert first.data[1].embedding != pytest.approx(vector, abs=1e-6)


def test_tool_call_plain_and_streamed(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    reply = client.chat.completions.create(model="sim-model", messages=MESSAGES, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"sim": True}
    stream = client.chat.completions.create(
        model="sim-model", messages=MESSAGES, tools=tools, stream=True
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in stream if c.choices]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"sim": True}


def test_json_response_format_yields_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="sim-model", messages=MESSAGES, max_tokens=6, response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content)["text"]


def test_a_schema_of_required_strings_is_followed_like_guided_decoding(
    client: openai.OpenAI,
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
              "country": {"type": "string"}}, "required": ["city", "country"]}  # fmt: skip
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(
        model="sim-model",
        messages=MESSAGES,
        tools=tools,
        tool_choice=forced,  # type: ignore[arg-type]
    )
    arguments = reply.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    assert json.loads(arguments) == {"city": "sim", "country": "sim"}
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    reply = client.chat.completions.create(
        model="sim-model",
        messages=MESSAGES,
        max_tokens=30,
        response_format=response_format,  # type: ignore[arg-type]
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "sim", "country": "sim"}


def test_enable_thinking_switches_reasoning_on_and_off(client: openai.OpenAI) -> None:
    def answer(thinking: bool) -> dict:
        reply = client.chat.completions.create(
            model="sim-model", messages=MESSAGES, max_tokens=8,
            extra_body={"chat_template_kwargs": {"enable_thinking": thinking}},
        )  # fmt: skip
        return reply.choices[0].message.model_dump()

    on, off = answer(True), answer(False)
    assert len(on["reasoning"].split()) == 4 and len(on["content"].split()) == 4
    assert not off.get("reasoning") and len(off["content"].split()) == 8


def test_unknown_model_is_404_and_bad_input_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="sim-model", messages=[])


def test_context_length_is_enforced(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="sim-model", prompt="x", max_tokens=40_000)


def test_tokenize_counts_what_usage_reports(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    url = fresh_sim.base_url + "/tokenize"  # at the root, like vLLM's
    counted = httpx.post(url, json={"model": "sim-model", "messages": MESSAGES}).json()
    assert counted["max_model_len"] == 32768 and len(counted["tokens"]) == counted["count"]
    answer = client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=2)
    assert answer.usage is not None and answer.usage.prompt_tokens == counted["count"]
    prompt = "once upon a time there was a box"
    counted = httpx.post(url, json={"model": "sim-model", "prompt": prompt}).json()
    text = client.completions.create(model="sim-model", prompt=prompt, max_tokens=2)
    assert text.usage is not None and text.usage.prompt_tokens == counted["count"]
    assert httpx.post(url, json={"model": "nope", "prompt": "x"}).status_code == 404
    assert httpx.post(url, json={"model": "sim-model", "messages": []}).status_code == 400
    fresh_sim.set_faults(tokenize_fail=True)
    assert httpx.post(url, json={"model": "sim-model", "prompt": "x"}).status_code == 500
    assert fresh_sim.stats()["tokenize_requests"] == 5


def test_invalid_json_body_gets_vllm_error_shape(fresh_sim: SimHandle) -> None:
    resp = httpx.post(fresh_sim.url + "/chat/completions", content=b"{not json")
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == 400
    assert "not valid JSON" in error["message"]


def test_metrics_use_vllm_names(client: openai.OpenAI, fresh_sim: SimHandle) -> None:
    client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=3)
    text = httpx.get(fresh_sim.base_url + "/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_success_total",
    ):
        assert name + "{" in text, name
    assert httpx.get(fresh_sim.base_url + "/health").status_code == 200


def test_reasoning_tokens_come_first_in_the_reasoning_field() -> None:
    with start_simulator(time_scale=0.01, reasoning_tokens=3) as sim:
        client = openai.OpenAI(base_url=sim.url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="sim-model", messages=MESSAGES, max_tokens=5)
        message = reply.choices[0].message
        assert message.model_extra is not None
        assert message.model_extra["reasoning"] == "the box sells"
        assert message.content == " concurrency not"
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 5
        chunks = list(
            client.chat.completions.create(
                model="sim-model", messages=MESSAGES, max_tokens=5, stream=True
            )
        )
    thoughts = [c.choices[0].delta.model_extra.get("reasoning") for c in chunks]
    assert [t for t in thoughts if t] == ["the", " box", " sells"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == " concurrency not"
