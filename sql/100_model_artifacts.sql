-- Model artifacts in the database, content-addressed: a registered version's bundle directory as
-- one deterministic tar, stored once under its SHA-256. Workers fetch it by that hash, check it and
-- unpack it into a local cache, so no volume has to be shared between hosts, and a version always
-- loads the bytes it was registered with. artifact_path stays as a record of where the trainer
-- saved the directory; versions registered before this migration have no artifact_sha256 and still
-- load from that path.

CREATE TABLE IF NOT EXISTS model_artifacts (
    sha256      text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        bigint      NOT NULL CHECK (size >= 0),
    content     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE model_artifacts IS 'Packed model bundles (tar) by the SHA-256 of their bytes; written once, never changed.';

ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS artifact_sha256 text REFERENCES model_artifacts (sha256);
COMMENT ON COLUMN model_versions.artifact_sha256 IS
    'The version''s bundle in model_artifacts; NULL for versions registered before artifacts were stored (loaded from artifact_path).';

-- linewatch_registrar: whoever registers models (the trainer). sql/090_least_privilege.sql creates
-- it too; created here as well so this file works on its own.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_registrar') THEN
        CREATE ROLE linewatch_registrar NOLOGIN;
    END IF;
END
$$;

-- Workers and dashboards only read artifacts; only the registrar (the trainer's login) adds them,
-- and nobody changes one: the bytes a version was registered with are the bytes every worker loads.
GRANT SELECT ON model_artifacts TO linewatch_reader, linewatch_writer;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON model_artifacts FROM linewatch_writer;
GRANT USAGE ON SCHEMA public TO linewatch_registrar;
GRANT SELECT, INSERT ON model_artifacts TO linewatch_registrar;
