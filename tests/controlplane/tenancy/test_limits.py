"""Every view of a tenant's limits is made from `TenantLimits`: a limit is in all or in none.

The behaviour of each view is tested where it lives (CLI, console, admin API, admission); here
only that each one has exactly the declared limits, in the declared order, with their words.
"""

from __future__ import annotations

import pytest
import typer.main
from sqlalchemy import Integer

from controlplane.admission.pg_schema import ADMIT_FUNCTION
from controlplane.cli.tenants import tenants_app
from controlplane.console.forms import CHECKBOXES, TEXT_FIELDS
from controlplane.tenancy.limits import BY_NAME, LIMITS, Limit, TenantLimits, _limit_fields
from controlplane.tenancy.models import NOT_NULLABLE, Tenant, TenantPublic, TenantUpdate
from controlplane.tenancy.policy import TenantPolicy

NAMES = [field.name for field in LIMITS]


def test_the_table_the_schemas_and_the_policy_have_every_limit() -> None:
    columns = Tenant.__table__.columns
    for field in LIMITS:
        column = columns[field.name]
        assert isinstance(column.type, field.limit.column)
        assert column.nullable is field.optional
    assert [name for name in TenantUpdate.model_fields if name != "disabled"] == NAMES
    assert list(TenantPublic.model_fields)[: len(NAMES)] == NAMES
    assert set(NAMES) <= set(TenantPolicy.model_fields)
    assert set(NOT_NULLABLE) == {f.name for f in LIMITS if not f.optional} | {"disabled"}


def test_an_update_keeps_each_limits_bounds_and_clears_only_optional_ones() -> None:
    for field in LIMITS:
        if field.optional:
            assert getattr(TenantUpdate.model_validate({field.name: None}), field.name) is None
        else:
            with pytest.raises(ValueError, match="may not be null"):
                TenantUpdate.model_validate({field.name: None})
    with pytest.raises(ValueError, match="less than or equal to 10000"):
        TenantUpdate.model_validate({"max_concurrency": 10_001})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TenantUpdate.model_validate({"rpm": 0})


def test_the_cli_has_one_option_per_limit_with_its_help() -> None:
    group = typer.main.get_group(tenants_app)
    for command in ("create", "update"):
        params = group.commands[command].params
        assert [p.name for p in params[:2]] == ["name", "config"]  # then the limits, in order
        options = [p for p in params if p.name in BY_NAME]
        assert params[2 : 2 + len(options)] == options
        declared = [f for f in LIMITS if f.limit.cli is not None]
        assert [p.name for p in options] == [f.name for f in declared]
        for option, field in zip(options, declared, strict=True):
            assert option.help == field.limit.cli
            assert option.opts == ["--" + (field.limit.option or field.name).replace("_", "-")]


def test_the_console_form_has_an_input_per_limit() -> None:
    assert sorted(f.name for f in [*TEXT_FIELDS, *CHECKBOXES]) == sorted(NAMES)
    assert all(field.label for field in LIMITS)


def test_postgres_admission_takes_the_limits_as_their_column_types() -> None:
    assert f"p_cap {BY_NAME['max_concurrency'].postgres_type()}" in ADMIT_FUNCTION
    assert "p_rpm integer, p_tpm bigint" in ADMIT_FUNCTION


def test_a_limit_without_its_description_is_refused() -> None:
    class Broken(TenantLimits):
        n: int = 1  # no Limit(...): no column type, no words for the console or the CLI

    with pytest.raises(TypeError, match=r"Broken\.n needs exactly one Limit"):
        _limit_fields(Broken)
    assert _limit_fields(TenantLimits) == LIMITS
    assert isinstance(Limit(Integer, "N").column(), Integer)
