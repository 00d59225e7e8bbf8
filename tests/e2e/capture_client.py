"""Run inside the appliance's network namespace: one streamed chat with a forced tool call by a
tenant with content capture on (the openai SDK, raw response for the request id).

argv: demo.json, the tenant's key. Prints one JSON document: the request as sent, the request id
and the stream's chunks as the SDK parsed them.
"""

import json
import sys

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


def main(demo_file: str, key: str) -> None:
    with open(demo_file) as handle:
        demo = json.load(handle)
    client = openai.OpenAI(base_url=demo["url"], api_key=key, max_retries=0)
    request = {
        "model": demo["model"],
        "messages": [{"role": "user", "content": "What is the weather in Paris? capture-e2e"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
        "max_tokens": 60,
        "stream": True,
    }
    raw = client.chat.completions.with_raw_response.create(**request)
    chunks = [chunk.model_dump(exclude_unset=True) for chunk in raw.parse()]
    print(json.dumps({"request": request, "request_id": raw.headers["x-request-id"],
                      "chunks": chunks}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
