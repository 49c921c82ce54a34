-- Replays (`linewatch replay`): their results in a schema of their own, under a run id, so a
-- backtest never mixes with what the plant lives on. The live tables are never written by a
-- replay. Each results table has the live table's columns (LIKE) after a run_id; a run is one
-- row in replay.runs when it starts and one in replay.run_results when it ends (no UPDATE needed,
-- so the writer role stays append-only). Plain SQL, the same on TimescaleDB and PostgreSQL.
-- Documented in docs/replay.md.

CREATE SCHEMA IF NOT EXISTS replay;

CREATE TABLE IF NOT EXISTS replay.runs (
    run_id      uuid        PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,          -- file, database, kafka
    description text        NOT NULL,
    arguments   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    models      jsonb       NOT NULL DEFAULT '{}'::jsonb  -- model id -> version the run scored with
);

CREATE TABLE IF NOT EXISTS replay.run_results (
    run_id      uuid        PRIMARY KEY REFERENCES replay.runs (run_id) ON DELETE CASCADE,
    finished_at timestamptz NOT NULL DEFAULT now(),
    counts      jsonb       NOT NULL,
    metrics     jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS replay.scores (run_id uuid NOT NULL, LIKE public.scores INCLUDING DEFAULTS INCLUDING GENERATED);
CREATE INDEX IF NOT EXISTS replay_scores_run_ts ON replay.scores (run_id, asset_id, ts);
CREATE TABLE IF NOT EXISTS replay.shadow_scores (run_id uuid NOT NULL, LIKE public.shadow_scores INCLUDING DEFAULTS INCLUDING GENERATED);
CREATE INDEX IF NOT EXISTS replay_shadow_scores_run_ts ON replay.shadow_scores (run_id, asset_id, ts);
CREATE TABLE IF NOT EXISTS replay.alerts (run_id uuid NOT NULL, LIKE public.alerts INCLUDING DEFAULTS INCLUDING GENERATED);
CREATE INDEX IF NOT EXISTS replay_alerts_run_ts ON replay.alerts (run_id, asset_id, ts);
CREATE TABLE IF NOT EXISTS replay.alert_suppressions (run_id uuid NOT NULL,
                                                      LIKE public.alert_suppressions INCLUDING DEFAULTS INCLUDING GENERATED);
CREATE TABLE IF NOT EXISTS replay.deadletters (run_id uuid NOT NULL, LIKE public.deadletters INCLUDING DEFAULTS INCLUDING GENERATED);

-- One row per run: what it read, when, and what came out (NULL finished_at: still running or stopped).
CREATE OR REPLACE VIEW replay.run_summary AS
SELECT r.run_id, r.started_at, res.finished_at, r.source, r.description, r.arguments, r.models,
       res.counts, res.metrics
FROM replay.runs r LEFT JOIN replay.run_results res USING (run_id);

COMMENT ON SCHEMA replay IS 'linewatch replay results, one run_id per replay; never read by the live worker.';

GRANT USAGE ON SCHEMA replay TO linewatch_reader, linewatch_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA replay TO linewatch_reader;
GRANT SELECT, INSERT ON replay.runs, replay.run_results, replay.scores, replay.shadow_scores, replay.alerts,
    replay.alert_suppressions, replay.deadletters TO linewatch_writer;
GRANT SELECT ON replay.run_summary TO linewatch_writer;
