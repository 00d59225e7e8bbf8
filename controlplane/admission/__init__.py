"""Admission: per-tenant caps, the weighted fair queue, engine capacity, rates and quotas.

`local` decides inside one replica; `coordinated` holds the caps across replicas through
PostgreSQL (`pg_schema`, `replica_link`).
"""
