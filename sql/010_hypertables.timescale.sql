-- Only where the timescaledb extension is available (the runner picks *.timescale.sql or *.plain.sql).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('spc_measurements', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('scores', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('alerts', by_range('ts', INTERVAL '7 days'), if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE spc_measurements SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id, characteristic');
ALTER TABLE scores SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id, detector');
SELECT add_compression_policy('spc_measurements', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('scores', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('spc_measurements', INTERVAL '730 days', if_not_exists => TRUE);
SELECT add_retention_policy('scores', INTERVAL '365 days', if_not_exists => TRUE);
