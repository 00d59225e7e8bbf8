"""Run inside the appliance's network namespace: call the demo with the official openai SDK.

Prints one JSON document with what each call returned (whole responses and stream chunks, as the
SDK parsed them), for the test outside to assert on field by field.
argv: demo.json, the engine's base URL (for its own /tokenize).
"""

import json
import sys
import urllib.error
import urllib.request

import openai

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "Name of the city"}},
            "required": ["city"],
        },
    },
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
SAY_HELLO = [{"role": "user", "content": "Say hello to the auditors."}]
DESCRIBE = [{"role": "user", "content": "Describe Rome as JSON."}]
FORCED = {"type": "function", "function": {"name": "get_weather"}}
THINKING = {"chat_template_kwargs": {"enable_thinking": True}}


def raw_post(demo: dict, body: dict) -> dict:
    """A chat request the SDK would not send as it is: its status and the error body."""
    request = urllib.request.Request(
        demo["url"].rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {demo['api_key']}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return {"status": response.status, "body": json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.loads(exc.read())}


def stream(
    client: openai.OpenAI, model: str, messages: list, include_usage: bool
) -> dict[str, object]:
    """Stream 12 tokens; the detokenizer may merge tokens into fewer chunks, usage must not lie."""
    chunks = 0
    usage = None
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit,
        extra_body={"ignore_eos": True},
    ):
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    return {"chunks": chunks, "completion_tokens": usage}


def both(client: openai.OpenAI, **request: object) -> dict[str, object]:
    """The same request answered whole and streamed (with usage): both as the SDK parsed them."""
    plain = client.chat.completions.create(**request)  # type: ignore[call-overload]
    chunks = client.chat.completions.create(  # type: ignore[call-overload]
        **request, stream=True, stream_options={"include_usage": True}
    )
    return {
        "plain": plain.model_dump(mode="json"),
        "stream": [chunk.model_dump(mode="json") for chunk in chunks],
    }


def engine_token_count(engine_url: str, model: str, **chat: object) -> int:
    """What the engine's own tokenizer counts for a chat prompt (vLLM's /tokenize)."""
    body = json.dumps({"model": model, "add_generation_prompt": True, **chat}).encode()
    request = urllib.request.Request(
        engine_url.rstrip("/").removesuffix("/v1") + "/tokenize",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # loopback engine
        return int(json.load(response)["count"])


def speculative_counters(engine_url: str) -> dict[str, float]:
    """vLLM's speculative-decoding counters from the engine's own /metrics (MTP at work)."""
    url = engine_url.rstrip("/").removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(url, timeout=60) as response:  # loopback engine
        text = response.read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        base = name.split("{", 1)[0]
        if base in ("vllm:spec_decode_num_draft_tokens_total",
                    "vllm:spec_decode_num_accepted_tokens_total"):  # fmt: skip
            counters[base] = counters.get(base, 0.0) + float(value)
    return counters


def main(demo_file: str, engine_url: str) -> None:
    with open(demo_file) as handle:
        demo = json.load(handle)
    model = demo["model"]
    client = openai.OpenAI(base_url=demo["url"], api_key=demo["api_key"], max_retries=0)
    result: dict[str, object] = {}
    result["models"] = [model.id for model in client.models.list()]
    messages = [{"role": "user", "content": "Say hello to the auditors."}]
    extra = {"ignore_eos": True}
    plain = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, extra_body=extra
    )
    result["plain"] = {
        "finish_reason": plain.choices[0].finish_reason,
        "completion_tokens": plain.usage.completion_tokens if plain.usage else None,
        "prompt_tokens": plain.usage.prompt_tokens if plain.usage else None,
    }
    result["stream"] = stream(client, model, messages, include_usage=False)
    result["stream_with_usage"] = stream(client, model, messages, include_usage=True)
    common = {"model": model, "temperature": 0, "max_tokens": 60}
    result["tool_forced"] = both(
        client, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=FORCED, **common
    )
    result["tool_auto"] = both(client, messages=ASK_WEATHER, tools=[WEATHER], **common)
    result["no_tool_asked"] = both(client, messages=SAY_HELLO, tools=[WEATHER], **common)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA},
    }
    result["json_schema"] = both(
        client, messages=DESCRIBE, response_format=response_format, **common
    )
    result["reasoning_on"] = both(client, messages=SAY_HELLO, extra_body=THINKING, **common)
    result["reasoning_off"] = both(client, messages=SAY_HELLO, **common)
    result["engine_prompt_tokens"] = {
        "tool": engine_token_count(engine_url, model, messages=ASK_WEATHER, tools=[WEATHER]),
        "hello": engine_token_count(engine_url, model, messages=SAY_HELLO),
        "hello_thinking": engine_token_count(
            engine_url, model, messages=SAY_HELLO, chat_template_kwargs={"enable_thinking": True}
        ),
    }
    result["speculative"] = speculative_counters(engine_url)
    # Refused by the engine itself (no messages) and by the gateway (media by URL): both must
    # reach the client in OpenAI's error shape.
    result["no_messages"] = raw_post(demo, {"model": model, "max_tokens": 4})
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    result["remote_image"] = raw_post(
        demo, {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": [image]}]}
    )
    try:
        openai.OpenAI(base_url=demo["url"], api_key="sk-wrong", max_retries=0).models.list()
        result["wrong_key"] = "accepted"
    except openai.AuthenticationError as exc:
        result["wrong_key"] = {"status": exc.status_code, "body": exc.body}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
