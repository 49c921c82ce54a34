-- linewatch: no-transaction  (continuous aggregates cannot be created inside a transaction)
-- TimescaleDB: signal_features becomes a hypertable (guarded, like 010) with compression and
-- retention, and signal_features_1m a real-time continuous aggregate with the same columns as the
-- plain view of 060_signals_aggregates.plain.sql.
SELECT create_hypertable('signal_features', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE signal_features SET (timescaledb.compress, timescaledb.compress_segmentby = 'asset_id, sensor');
SELECT add_compression_policy('signal_features', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('signal_features', INTERVAL '365 days', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS signal_features_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket,
       asset_id, sensor, kind, unit,
       count(*)                                          AS n_windows,
       sum(n_samples)                                    AS n_samples,
       count(*) FILTER (WHERE cardinality(quality) > 0)  AS n_quality_issues,
       avg(mean)                                         AS mean,
       min(mean)                                         AS min_mean,
       max(mean)                                         AS max_mean,
       avg(rms)                                          AS mean_rms,
       max(rms)                                          AS max_rms,
       max(peak)                                         AS max_peak,
       avg(crest_factor)                                 AS mean_crest_factor,
       max(crest_factor)                                 AS max_crest_factor,
       avg(kurtosis)                                     AS mean_kurtosis,
       max(kurtosis)                                     AS max_kurtosis,
       avg(spectral_centroid_hz)                         AS mean_spectral_centroid_hz
FROM signal_features
GROUP BY bucket, asset_id, sensor, kind, unit
WITH NO DATA;

SELECT add_continuous_aggregate_policy('signal_features_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);

GRANT SELECT ON signal_features_1m TO linewatch_reader;
