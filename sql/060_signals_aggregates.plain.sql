-- Plain PostgreSQL: signal_features stays an ordinary table and signal_features_1m is a view with
-- the same name and columns as the TimescaleDB continuous aggregate, so dashboards and queries
-- work unchanged (computed at query time instead of incrementally).
CREATE OR REPLACE VIEW signal_features_1m AS
SELECT date_trunc('minute', ts) AS bucket,
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
GROUP BY 1, asset_id, sensor, kind, unit;

COMMENT ON VIEW signal_features_1m IS
'Per asset, sensor and minute: window count, quality issues and the headline features (mean / max).';

GRANT SELECT ON signal_features_1m TO linewatch_reader;
