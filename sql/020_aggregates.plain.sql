-- Plain PostgreSQL: the same names as the continuous aggregates, as ordinary views, so
-- dashboards and queries work unchanged (computed at query time instead of incrementally).
CREATE OR REPLACE VIEW scores_1m AS
SELECT date_trunc('minute', ts) AS bucket,
       asset_id, modality, detector,
       count(*)                                AS n_events,
       count(*) FILTER (WHERE is_anomaly)      AS n_anomalies,
       avg(calibrated_score)                   AS mean_calibrated_score,
       max(calibrated_score)                   AS max_calibrated_score
FROM scores
GROUP BY 1, asset_id, modality, detector;

CREATE OR REPLACE VIEW spc_1h AS
SELECT date_trunc('hour', ts) AS bucket,
       asset_id, sku, characteristic,
       count(*)        AS n,
       avg(value)      AS mean,
       stddev_samp(value) AS stddev,
       min(value)      AS min,
       max(value)      AS max
FROM spc_measurements
GROUP BY 1, asset_id, sku, characteristic;
