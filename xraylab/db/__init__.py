"""Database schema, engine/session helpers and migrations (SQLite or MariaDB, one code path)."""
