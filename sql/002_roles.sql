-- Group roles: grant them to login roles (e.g. GRANT linewatch_reader TO grafana).
-- linewatch_reader: dashboards and SPC engineers, read-only. linewatch_writer: workers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_reader') THEN
        CREATE ROLE linewatch_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_writer') THEN
        CREATE ROLE linewatch_writer NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO linewatch_reader, linewatch_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO linewatch_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO linewatch_reader;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO linewatch_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO linewatch_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO linewatch_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO linewatch_writer;
