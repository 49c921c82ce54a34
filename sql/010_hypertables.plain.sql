-- Plain PostgreSQL: the tables from 001 stay ordinary tables. Nothing to do, recorded so that
-- a later move to TimescaleDB is visible in schema_migrations (variant 'plain').
SELECT 1;
