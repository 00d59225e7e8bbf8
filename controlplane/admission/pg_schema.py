"""Tables and the SQL function that make admission hold across PostgreSQL replicas.

`admission_leases` holds one row per request in flight at an engine, whichever replica admitted
it. `sparkplane_admit(...)` takes a transaction-scoped advisory lock, drops the leases of replicas
whose heartbeat is older than the TTL (a crashed replica cannot leak slots), and only then counts
and inserts, so two replicas can never both take the last slot. Each statement of a VOLATILE
PL/pgSQL function gets a fresh snapshot, so the counts see every commit made before the lock was
granted. Rate buckets are updated with single-row atomic UPDATEs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.core.db import Base, UtcDateTime, utcnow
from controlplane.tenancy.limits import BY_NAME

NOTIFY_CHANNEL = "sparkplane_admission"


class AdmissionLease(Base):
    __tablename__ = "admission_leases"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    engine_url: Mapped[str] = mapped_column(String(500), index=True)
    replica_id: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AdmissionReplica(Base):
    __tablename__ = "admission_replicas"

    replica_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AdmissionBucket(Base):
    """A tenant's rpm or tpm token bucket, shared by all replicas."""

    __tablename__ = "admission_buckets"

    tenant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    level: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# Refill a bucket of `lim` per minute to now, then apply `delta`; one atomic row update.
_REFILL = "least({lim}::float8, level + extract(epoch FROM (ts - updated_at)) * {lim} / 60.0)"

# The tenant limits admission reads, typed as their columns (TenantLimits): integer, bigint.
_CAP, _RPM, _TPM = (BY_NAME[name].postgres_type() for name in ("max_concurrency", "rpm", "tpm"))

# The f-strings below splice only constants of this module, never input: S608 does not apply.
ADMIT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION sparkplane_admit(
    p_tenant integer, p_engine text, p_replica text, p_cap {_CAP}, p_capacity integer,
    p_rpm {_RPM}, p_tpm {_TPM}, p_ttl double precision)
RETURNS TABLE(lease_id bigint, reason text, retry_after double precision)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    ts timestamptz := clock_timestamp();
    n_tenant integer;
    n_engine integer;
    lvl double precision;
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('{NOTIFY_CHANNEL}'));
    DELETE FROM admission_leases l USING admission_replicas r
        WHERE l.replica_id = r.replica_id AND r.heartbeat_at < ts - make_interval(secs => p_ttl);
    SELECT count(*) FILTER (WHERE l.tenant_id = p_tenant),
           count(*) FILTER (WHERE l.engine_url = p_engine)
        INTO n_tenant, n_engine FROM admission_leases l;
    IF n_tenant >= p_cap THEN
        RETURN QUERY SELECT NULL::bigint, 'tenant_concurrency_limit'::text, NULL::float8;
        RETURN;
    END IF;
    IF n_engine >= p_capacity THEN
        RETURN QUERY SELECT NULL::bigint, 'engine_capacity'::text, NULL::float8;
        RETURN;
    END IF;
    IF p_tpm IS NOT NULL THEN
        INSERT INTO admission_buckets AS b (tenant_id, kind, level, updated_at)
            VALUES (p_tenant, 'tpm', p_tpm, ts) ON CONFLICT DO NOTHING;
        UPDATE admission_buckets SET level = {_REFILL.format(lim="p_tpm")}, updated_at = ts
            WHERE tenant_id = p_tenant AND kind = 'tpm' RETURNING level INTO lvl;
        IF lvl <= 0 THEN
            RETURN QUERY SELECT NULL::bigint, 'tpm_limit'::text, (1 - lvl) / (p_tpm / 60.0);
            RETURN;
        END IF;
    END IF;
    IF p_rpm IS NOT NULL THEN
        INSERT INTO admission_buckets AS b (tenant_id, kind, level, updated_at)
            VALUES (p_tenant, 'rpm', p_rpm, ts) ON CONFLICT DO NOTHING;
        UPDATE admission_buckets SET level = {_REFILL.format(lim="p_rpm")}, updated_at = ts
            WHERE tenant_id = p_tenant AND kind = 'rpm' RETURNING level INTO lvl;
        IF lvl < 1 THEN
            RETURN QUERY SELECT NULL::bigint, 'rpm_limit'::text, (1 - lvl) / (p_rpm / 60.0);
            RETURN;
        END IF;
        UPDATE admission_buckets SET level = level - 1 WHERE tenant_id = p_tenant AND kind = 'rpm';
    END IF;
    INSERT INTO admission_leases (tenant_id, engine_url, replica_id, created_at)
        VALUES (p_tenant, p_engine, p_replica, ts) RETURNING id INTO new_id;
    RETURN QUERY SELECT new_id, NULL::text, NULL::float8;
END
$fn$;
"""  # noqa: S608

RELEASE_SQL = f"""
WITH gone AS (DELETE FROM admission_leases WHERE id = %(lease)s RETURNING id)
SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM gone
"""  # noqa: S608

CHARGE_TOKENS_SQL = f"""
UPDATE admission_buckets SET level = {_REFILL.format(lim="%(tpm)s")} - %(tokens)s,
    updated_at = ts FROM (SELECT clock_timestamp() AS ts) AS now_
WHERE tenant_id = %(tenant)s AND kind = 'tpm'
"""  # noqa: S608

HEARTBEAT_SQL = """
INSERT INTO admission_replicas (replica_id, heartbeat_at) VALUES (%(replica)s, clock_timestamp())
ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
"""
