"""Recorded figures against the profiles' references: pass or warn at the boundaries, never fail."""

from __future__ import annotations

import pytest

from installer.lifecycle.validate_reference import (
    RATIO_FLOOR,
    REFERENCES,
    TOLERANCE,
    judge,
    judge_all,
)


@pytest.mark.parametrize(
    ("value", "status"),
    [(300.0, "pass"), (300.0 * (1 - TOLERANCE), "pass"), (300.0 * (1 - TOLERANCE) - 0.01, "warn"),
     (0.0, "warn"), (900.0, "pass")],
)  # fmt: skip
def test_a_rate_passes_down_to_the_tolerance_below_its_reference(value: float, status: str) -> None:
    assert judge("aggregate_tok_s_16", value, 300.0).status == status


@pytest.mark.parametrize(
    ("value", "status"),
    [(400.0, "pass"), (400.0 * (1 + TOLERANCE), "pass"), (400.0 * (1 + TOLERANCE) + 0.01, "warn"),
     (1.0, "pass")],
)  # fmt: skip
def test_a_time_passes_up_to_the_tolerance_above_its_reference(value: float, status: str) -> None:
    assert judge("ttft_short_ms", value, 400.0).status == status


@pytest.mark.parametrize(
    ("value", "status"), [(RATIO_FLOOR, "pass"), (1.2, "pass"), (RATIO_FLOOR - 0.001, "warn")]
)
def test_the_control_planes_ratio_has_its_own_floor_on_every_profile(
    value: float, status: str
) -> None:
    for profile in ("demo", "throughput", None):
        (verdict,) = judge_all(profile, {"ratio_16": value})
        assert verdict.status == status and verdict.reference == RATIO_FLOOR


def test_recorded_spark_figures_against_the_seed() -> None:
    # Figures as a Spark with the throughput profile would report them (DESIGN.md's numbers,
    # one of them a third short): only that one warns; nothing is ever "fail".
    recorded = {"decode_tok_s_1": 31.0, "aggregate_tok_s_16": 200.0, "per_stream_tok_s_16": 17.5,
                "prefill_long_tok_s": 2300.0, "ttft_short_ms": 80.0, "ratio_16": 0.99}  # fmt: skip
    verdicts = {v.name: v.status for v in judge_all("throughput", recorded)}
    assert verdicts == {"decode_tok_s_1": "pass", "aggregate_tok_s_16": "warn",
                        "per_stream_tok_s_16": "pass", "prefill_long_tok_s": "pass",
                        "ttft_short_ms": "info", "ratio_16": "pass"}  # fmt: skip


def test_an_unknown_profile_reports_figures_without_judging_them() -> None:
    (verdict,) = judge_all("no-such-profile", {"decode_tok_s_1": 1.0})
    assert verdict.status == "info" and verdict.reference is None
    assert set(REFERENCES) == {"demo", "throughput", "latency"}
