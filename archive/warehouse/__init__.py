"""The warehouse: catalogued Parquet tables in a Hive metastore kept in PostgreSQL (see ``catalog``)."""
