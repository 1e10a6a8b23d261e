"""Dask Gateway configuration and backends whose clusters live in the owner's space."""
