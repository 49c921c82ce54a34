-- Stable, documented views for SPC engineers and dashboards (read-only role).
CREATE OR REPLACE VIEW anomalies AS
SELECT s.ts, s.asset_id, s.sku, s.part_id, s.modality, s.detector, s.model_version,
       s.calibrated_score, s.threshold, s.tail_probability,
       s.top_feature,
       s.explanation,
       s.event_id
FROM scores s
WHERE s.is_anomaly AND s.ready;
COMMENT ON VIEW anomalies IS 'Every anomalous verdict with its top contributor; explanation holds all contributors.';

CREATE OR REPLACE VIEW anomaly_contributors AS
SELECT s.ts, s.asset_id, s.part_id, s.detector, s.event_id,
       c.ordinality       AS rank,
       c.value ->> 'name' AS feature,
       (c.value ->> 'value')::double precision AS contribution,
       (c.value ->> 'share')::double precision AS share
FROM scores s
CROSS JOIN LATERAL jsonb_array_elements(s.explanation) WITH ORDINALITY AS c(value, ordinality)
WHERE s.is_anomaly;
COMMENT ON VIEW anomaly_contributors IS 'One row per anomaly and contributing feature, ranked.';

CREATE OR REPLACE VIEW deadletter_summary AS
SELECT source_topic, error_type, count(*) AS n, min(received_at) AS first_seen, max(received_at) AS last_seen
FROM deadletters
GROUP BY source_topic, error_type;

GRANT SELECT ON anomalies, anomaly_contributors, deadletter_summary, scores_1m, spc_1h TO linewatch_reader;
