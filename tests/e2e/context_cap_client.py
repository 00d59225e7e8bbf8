"""Run inside the appliance's network namespace: a capped tenant's calls, with the openai SDK.

argv: demo.json, the capped tenant's key, the cap. Prints one JSON document for the test.
"""

import json
import sys

import openai


def main(demo_file: str, key: str, cap: int) -> None:
    with open(demo_file) as handle:
        demo = json.load(handle)
    client = openai.OpenAI(base_url=demo["url"], api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello to the auditors."}]
    filled = client.chat.completions.create(
        model=demo["model"], messages=messages, temperature=0, extra_body={"ignore_eos": True}
    )
    assert filled.usage is not None
    result: dict[str, object] = {
        "filled": {
            "prompt_tokens": filled.usage.prompt_tokens,
            "completion_tokens": filled.usage.completion_tokens,
        }
    }
    try:
        client.chat.completions.create(model=demo["model"], messages=messages, max_tokens=cap)
        result["over"] = {"status": 200}
    except openai.BadRequestError as exc:
        result["over"] = {"status": exc.status_code, "code": exc.code, "message": exc.message}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
