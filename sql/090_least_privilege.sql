-- Least privilege for the group roles. sql/002_roles.sql gave linewatch_writer SELECT, INSERT and
-- UPDATE on every table and view, present and future: a worker (the process that parses untrusted
-- input) could repoint model_versions.artifact_path at a file of its choice, rewrite
-- schema_migrations, and rewrite score history (directly, or through an updatable view such as
-- `anomalies`). What each role needs instead:
--
--   linewatch_writer     workers: COPY / INSERT ... ON CONFLICT DO NOTHING into the tables they fill
--                        (spc_measurements, scores, deadletters, signal_features, frame_heatmaps;
--                        the staging path needs SELECT for CREATE TEMP TABLE ... LIKE), SELECT on
--                        the rest (model_versions for the model cache), SELECT on schema_migrations
--                        for the start-up migration check; no UPDATE, DELETE or TRUNCATE anywhere.
--   linewatch_registrar  whoever registers models (`linewatch train`): INSERT a model_versions row,
--                        UPDATE its `active` column only (deactivating a version), nothing else.
--   linewatch_reader     unchanged: SELECT only.
--
-- Tables are named, not "ALL TABLES": a later migration (100+, possibly applied before this one on
-- a database that already had it) grants its own tables and must not lose those grants here.
-- Views never take writes from the writer, whichever migration created them.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_registrar') THEN
        CREATE ROLE linewatch_registrar NOLOGIN;
    END IF;
END
$$;

-- linewatch_writer: read, append, nothing else.
REVOKE ALL ON spc_measurements, scores, alerts, dispositions, model_versions, deadletters, signal_features,
    frame_heatmaps, schema_migrations FROM linewatch_writer;
GRANT SELECT ON spc_measurements, scores, alerts, dispositions, model_versions, deadletters, signal_features,
    frame_heatmaps, schema_migrations TO linewatch_writer;
GRANT INSERT ON spc_measurements, scores, deadletters, signal_features, frame_heatmaps TO linewatch_writer;

DO $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %s FROM linewatch_writer',
                       rel);
    END LOOP;
END
$$;

-- Tables created from here on give the writer SELECT only (002's default also had INSERT and
-- UPDATE): a migration that adds a table the workers fill grants INSERT on it explicitly, as
-- 050_signals.sql and 070_frames.sql do.
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE INSERT, UPDATE ON TABLES FROM linewatch_writer;

-- linewatch_registrar: register a version (INSERT ... ON CONFLICT DO NOTHING), deactivate one
-- (UPDATE ... SET active = false WHERE ..., which reads the key columns), and pass the start-up
-- migration check `linewatch train` runs. It cannot change what a registered version points at.
GRANT USAGE ON SCHEMA public TO linewatch_registrar;
GRANT SELECT, INSERT ON model_versions TO linewatch_registrar;
GRANT UPDATE (active) ON model_versions TO linewatch_registrar;
GRANT SELECT ON schema_migrations TO linewatch_registrar;

-- Model artifacts (sql/100_model_artifacts.sql) run after this file and grant the registrar
-- SELECT, INSERT on model_artifacts themselves. On a database where 100 was applied before this
-- file existed, grant it here too (and take back the writer's INSERT: artifacts are registered,
-- not written by workers).
DO $$
BEGIN
    IF to_regclass('public.model_artifacts') IS NOT NULL THEN
        GRANT SELECT, INSERT ON model_artifacts TO linewatch_registrar;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON model_artifacts FROM linewatch_writer;
    END IF;
END
$$;
