"""Run by the engine venv's python: judge engine argument lists with vLLM's own code.

argv: a JSON file holding a list of cases {"name", "argv", "build_config"}, and the file to
write the results to (vLLM logs to stdout). For each case this
does what `python -m vllm.entrypoints.openai.api_server` does before it loads a model: parse with
vLLM's argument parser, run its serve and API-server validations, build the engine arguments;
the speculative config's keys must be SpeculativeConfig fields. With build_config (the model
files exist here) it also builds the whole engine configuration, the draft's included. Then it
asks vLLM's media connector, configured as parsed, to load an image URL from another host.
Writes one JSON object: case name -> {"ok", "error", "speculative", "media_domains", "media"}.
"""

import contextlib
import dataclasses
import io
import json
import sys


def judge(argv: list[str], build_config: bool) -> dict[str, object]:
    from vllm.config import SpeculativeConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.launchers.launcher import validate_api_server_args
    from vllm.multimodal.media import MediaConnector
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv)
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1]}
    try:
        validate_parsed_serve_args(args)
        validate_api_server_args(args)
        engine_args = AsyncEngineArgs.from_cli_args(args)
        speculative = engine_args.speculative_config
        if speculative:
            known = {field.name for field in dataclasses.fields(SpeculativeConfig)}
            unknown = sorted(set(speculative) - known)
            if unknown:
                raise ValueError(f"speculative config keys unknown to vLLM: {unknown}")
        if build_config:
            engine_args.create_engine_config()
    except Exception as exc:  # report vLLM's own refusal, whatever its type
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    connector = MediaConnector(allowed_media_domains=engine_args.allowed_media_domains)
    try:
        connector.load_from_url("http://images.example.com/cat.png", media_io=None)  # type: ignore[arg-type]
        media = "fetched"
    except ValueError as exc:
        media = f"refused: {exc}"
    except Exception as exc:  # a fetch that was attempted and failed is not a refusal
        media = f"attempted: {type(exc).__name__}: {exc}"
    return {
        "ok": True,
        "speculative": speculative,
        "media_domains": engine_args.allowed_media_domains,
        "media": media,
    }


def main(cases_file: str, results_file: str) -> None:
    with open(cases_file) as handle:
        cases = json.load(handle)
    results = {case["name"]: judge(case["argv"], case["build_config"]) for case in cases}
    with open(results_file, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
