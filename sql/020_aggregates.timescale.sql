-- linewatch: no-transaction  (continuous aggregates cannot be created inside a transaction)
CREATE MATERIALIZED VIEW IF NOT EXISTS scores_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket,
       asset_id, modality, detector,
       count(*)                                AS n_events,
       count(*) FILTER (WHERE is_anomaly)      AS n_anomalies,
       avg(calibrated_score)                   AS mean_calibrated_score,
       max(calibrated_score)                   AS max_calibrated_score
FROM scores
GROUP BY bucket, asset_id, modality, detector
WITH NO DATA;

SELECT add_continuous_aggregate_policy('scores_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS spc_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket,
       asset_id, sku, characteristic,
       count(*)        AS n,
       avg(value)      AS mean,
       stddev_samp(value) AS stddev,
       min(value)      AS min,
       max(value)      AS max
FROM spc_measurements
GROUP BY bucket, asset_id, sku, characteristic
WITH NO DATA;

SELECT add_continuous_aggregate_policy('spc_1h',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE);
