"""Run inside the appliance's network namespace: call the demo with the official openai SDK.

Prints one JSON document with what each call returned, for the test outside to assert on.
"""

import json
import sys

import openai


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


def main(demo_file: str) -> None:
    with open(demo_file) as handle:
        demo = json.load(handle)
    client = openai.OpenAI(base_url=demo["url"], api_key=demo["api_key"], max_retries=0)
    result: dict[str, object] = {}
    result["models"] = [model.id for model in client.models.list()]
    messages = [{"role": "user", "content": "Say hello to the auditors."}]
    extra = {"ignore_eos": True}
    plain = client.chat.completions.create(
        model=demo["model"], messages=messages, max_tokens=12, temperature=0, extra_body=extra
    )
    result["plain"] = {
        "finish_reason": plain.choices[0].finish_reason,
        "completion_tokens": plain.usage.completion_tokens if plain.usage else None,
        "prompt_tokens": plain.usage.prompt_tokens if plain.usage else None,
    }
    result["stream"] = stream(client, demo["model"], messages, include_usage=False)
    result["stream_with_usage"] = stream(client, demo["model"], messages, include_usage=True)
    try:
        openai.OpenAI(base_url=demo["url"], api_key="sk-wrong", max_retries=0).models.list()
        result["wrong_key"] = "accepted"
    except openai.AuthenticationError as exc:
        result["wrong_key"] = {"status": exc.status_code, "body": exc.body}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
