-- The Day-30 layer (docs/defects.md): defect classes learned from confirmed anomalies, beside the
-- anomaly models. What is stored here:
--
--   defect_classes       the class list per SKU ('*' = every SKU) with the synonyms operators type and the
--                        route a recognised class carries (rework, scrap, maintenance); engineers edit it
--                        (`linewatch labels class ...` or plain SQL).
--   defect_class_of()    free text -> the class: case and spaces folded, synonyms looked up, SKU first.
--   frame_features       the pooled patch features the image anomaly model computed for a frame (alarm
--                        frames, and a sample of the others as examples of good parts): what a classifier
--                        reads, so training needs no second backbone and no stored images.
--   defect_labels        one row per confirmed, classified event, joined to its modality, SKU, model
--                        versions and whether its features are stored.
--   defect_label_counts  per SKU, modality and class: confirmed examples and whether the class is ready
--                        to train (20 examples, linewatch.defects.classifier.MIN_EXAMPLES).
--   defect_detections    every event a classifier recognised, and whether the anomaly layer flagged it.
--
-- Score and alert rows gain the classifier's verdict (NULL where no classifier covers the scope).
-- Plain SQL, the same on TimescaleDB (nullable columns need no rewrite of compressed chunks).

CREATE TABLE IF NOT EXISTS defect_classes (
    sku         text        NOT NULL DEFAULT '*',
    class       text        NOT NULL CHECK (class ~ '^[a-z0-9][a-z0-9_]*$'),
    route       text        NOT NULL DEFAULT 'rework' CHECK (route IN ('rework', 'scrap', 'maintenance')),
    synonyms    text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, class)
);
COMMENT ON TABLE defect_classes IS
'Defect classes per SKU (''*'' = every SKU): synonyms operators type for them and the route a recognised one carries.';

-- Case, spaces, hyphens and underscores folded: "Scratch ", "SCRATCH" and "scratch" are one class.
CREATE OR REPLACE FUNCTION defect_class_key(raw text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN nullif(btrim(regexp_replace(lower(raw), '[^a-z0-9]+', '_', 'g'), '_'), '');

-- The class a disposition's free text names for a SKU: an exact class or synonym of that SKU, then of
-- every SKU ('*'), else the folded text itself (a new class is still a class, listed until someone maps it).
CREATE OR REPLACE FUNCTION defect_class_of(p_sku text, raw text) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN coalesce(
        (SELECT c.class FROM defect_classes c
         WHERE c.sku IN (p_sku, '*')
           AND (c.class = defect_class_key(raw)
                OR defect_class_key(raw) IN (SELECT defect_class_key(s) FROM unnest(c.synonyms) AS s))
         ORDER BY (c.sku = '*'), c.class LIMIT 1),
        defect_class_key(raw));

CREATE TABLE IF NOT EXISTS frame_features (
    ts             timestamptz NOT NULL,
    event_id       uuid        NOT NULL,
    asset_id       text        NOT NULL,
    camera         text        NOT NULL,
    sku            text        NOT NULL,
    detector       text        NOT NULL,
    model_version  text        NOT NULL,
    is_anomaly     boolean     NOT NULL,
    features       real[]      NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (ts, event_id)
);
CREATE INDEX IF NOT EXISTS frame_features_sku_ts ON frame_features (sku, ts DESC);
COMMENT ON TABLE frame_features IS
'Pooled patch features of a frame (mean of all patches, then mean of the 8 most anomalous) as the image model computed '
'them: kept for alarm frames and a sample of the others, so defect classifiers train on confirmed events.';

ALTER TABLE scores ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS defect_confidence double precision;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS defect_route text;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS classifier_version text;
ALTER TABLE shadow_scores ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE shadow_scores ADD COLUMN IF NOT EXISTS defect_confidence double precision;
ALTER TABLE shadow_scores ADD COLUMN IF NOT EXISTS defect_route text;
ALTER TABLE shadow_scores ADD COLUMN IF NOT EXISTS classifier_version text;
ALTER TABLE replay.scores ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE replay.scores ADD COLUMN IF NOT EXISTS defect_confidence double precision;
ALTER TABLE replay.scores ADD COLUMN IF NOT EXISTS defect_route text;
ALTER TABLE replay.scores ADD COLUMN IF NOT EXISTS classifier_version text;
ALTER TABLE replay.shadow_scores ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE replay.shadow_scores ADD COLUMN IF NOT EXISTS defect_confidence double precision;
ALTER TABLE replay.shadow_scores ADD COLUMN IF NOT EXISTS defect_route text;
ALTER TABLE replay.shadow_scores ADD COLUMN IF NOT EXISTS classifier_version text;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS defect_route text;
ALTER TABLE replay.alerts ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE replay.alerts ADD COLUMN IF NOT EXISTS defect_route text;
COMMENT ON COLUMN scores.defect_class IS
'The defect classifier''s class for this event (''good'' or ''unknown'' when it recognised none); NULL: no classifier.';
COMMENT ON COLUMN scores.defect_confidence IS 'The classifier''s calibrated probability of defect_class.';
COMMENT ON COLUMN scores.defect_route IS 'Where a recognised defect goes: rework, scrap or maintenance (defect_classes).';
COMMENT ON COLUMN alerts.defect_class IS 'The recognised defect class of the alert''s events (most confident); NULL: unclassified.';

-- Confirmed, classified events: the latest disposition of each alert or event, followed to the events behind it.
CREATE OR REPLACE VIEW defect_labels AS
WITH latest AS (
    SELECT DISTINCT ON (coalesce(alert_id, event_id)) disposition_id, alert_id, event_id, verdict, defect_class, ts
    FROM dispositions
    ORDER BY coalesce(alert_id, event_id), ts DESC, written_at DESC
), refs AS (
    SELECT DISTINCT l.disposition_id, (r ->> 'ts')::timestamptz AS ts, (r ->> 'event_id')::uuid AS event_id
    FROM latest l
    JOIN alerts a ON a.alert_id = l.alert_id AND NOT a.shadow
    CROSS JOIN LATERAL jsonb_array_elements(a.scores) AS r
    UNION
    SELECT l.disposition_id, s.ts, s.event_id
    FROM latest l JOIN scores s ON s.event_id = l.event_id
    WHERE l.alert_id IS NULL
), events AS (
    SELECT refs.event_id, refs.ts, l.disposition_id, l.alert_id, l.verdict, l.defect_class AS raw_class,
           l.ts AS disposed_at, min(s.modality) AS modality, min(s.asset_id) AS asset_id, min(s.sku) AS sku,
           min(s.part_id) AS part_id, array_agg(DISTINCT s.detector || '@' || s.model_version) AS model_versions
    FROM refs
    JOIN latest l USING (disposition_id)
    JOIN scores s ON s.ts = refs.ts AND s.event_id = refs.event_id
    GROUP BY refs.event_id, refs.ts, l.disposition_id, l.alert_id, l.verdict, l.defect_class, l.ts
)
SELECT e.event_id, e.ts, e.modality, e.asset_id, e.sku, e.part_id, e.verdict, e.raw_class,
       CASE WHEN e.verdict = 'true_defect' THEN defect_class_of(e.sku, e.raw_class) ELSE 'good' END AS class,
       e.disposition_id, e.alert_id, e.disposed_at, e.model_versions,
       CASE e.modality
           WHEN 'frames' THEN EXISTS (SELECT 1 FROM frame_features f WHERE f.ts = e.ts AND f.event_id = e.event_id)
           WHEN 'spc' THEN EXISTS (SELECT 1 FROM spc_measurements m WHERE m.ts = e.ts AND m.event_id = e.event_id)
           ELSE EXISTS (SELECT 1 FROM signal_features f WHERE f.ts = e.ts AND f.asset_id = e.asset_id)
       END AS has_features
FROM events e
WHERE (e.verdict = 'true_defect' AND defect_class_key(e.raw_class) IS NOT NULL)
   OR e.verdict IN ('false_alarm', 'acceptable_variation');
COMMENT ON VIEW defect_labels IS
'Confirmed events with their class: true defects with a class (normalised by defect_classes), and dispositioned '
'false alarms and acceptable variation as class ''good''.';

CREATE OR REPLACE VIEW defect_label_counts AS
SELECT sku, modality, class, count(*) AS examples, count(*) FILTER (WHERE has_features) AS with_features,
       count(*) FILTER (WHERE has_features) >= 20 AS ready, max(disposed_at) AS last_confirmed
FROM defect_labels
GROUP BY sku, modality, class;
COMMENT ON VIEW defect_label_counts IS
'Confirmed examples per SKU, modality and class; ready = at least 20 with stored features (the training minimum).';

CREATE OR REPLACE VIEW defect_detections AS
SELECT DISTINCT ON (ts, event_id) ts, event_id, modality, asset_id, sku, part_id, defect_class, defect_confidence,
       defect_route, classifier_version, bool_or(is_anomaly) OVER (PARTITION BY ts, event_id) AS anomaly_flagged
FROM scores
WHERE defect_class IS NOT NULL AND defect_class NOT IN ('good', 'unknown')
ORDER BY ts, event_id, detector;
COMMENT ON VIEW defect_detections IS
'Every event a defect classifier recognised; anomaly_flagged = false marks a known defect the anomaly layer missed.';

-- alert_incidents and open_alerts gain the class the defect classifier recognised in the alert's
-- events and its route (the alert's latest row), after their columns (CREATE OR REPLACE appends).
CREATE OR REPLACE VIEW alert_incidents AS
WITH lifecycle AS (
    SELECT alert_id,
           min(opened_at)                                            AS opened_at,
           min(ts) FILTER (WHERE state = 'acknowledge')              AS acknowledged_at,
           (array_agg(actor ORDER BY ts) FILTER (WHERE state = 'acknowledge'))[1] AS acknowledged_by,
           max(ts) FILTER (WHERE state = 'close')                    AS closed_at,
           (array_agg(actor ORDER BY ts DESC) FILTER (WHERE state = 'close'))[1] AS closed_by,
           max(score)                                                AS max_score,
           max(CASE severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END) AS severity_rank,
           max(ts)                                                   AS last_ts,
           count(*)                                                  AS n_events
    FROM alerts
    GROUP BY alert_id
), latest AS (
    SELECT DISTINCT ON (alert_id) alert_id, kind, asset_id, route, shadow, state, severity, contributors,
           modalities, model_versions, note, defect_class AS recognised_class, defect_route AS recognised_route
    FROM alerts
    ORDER BY alert_id, ts DESC,
             CASE state WHEN 'close' THEN 4 WHEN 'acknowledge' THEN 3 WHEN 'update' THEN 2 ELSE 1 END DESC
), verdicts AS (
    SELECT DISTINCT ON (alert_id) alert_id, verdict, defect_class, operator, ts AS disposition_ts
    FROM dispositions
    WHERE alert_id IS NOT NULL
    ORDER BY alert_id, ts DESC, written_at DESC
)
SELECT l.alert_id, a.kind, a.asset_id, a.route, a.shadow, a.state AS last_state,
       l.opened_at, l.acknowledged_at, l.acknowledged_by, l.closed_at, l.closed_by,
       coalesce(l.closed_at, now()) - l.opened_at                AS duration,
       (ARRAY['info', 'warning', 'critical'])[l.severity_rank]   AS max_severity,
       l.max_score, a.contributors AS last_contributors, a.modalities, a.model_versions,
       l.n_events, l.last_ts, a.note AS last_note,
       v.verdict, v.defect_class, v.operator AS disposition_operator, v.disposition_ts,
       a.recognised_class, a.recognised_route
FROM lifecycle l
JOIN latest a USING (alert_id)
LEFT JOIN verdicts v USING (alert_id);
COMMENT ON COLUMN alert_incidents.recognised_class IS
'The defect class the classifier recognised in the alert''s events (its latest row); NULL: unclassified.';

CREATE OR REPLACE VIEW open_alerts AS
SELECT * FROM alert_incidents WHERE last_state <> 'close';

GRANT SELECT ON defect_classes, frame_features, defect_labels, defect_label_counts, defect_detections
    TO linewatch_reader, linewatch_writer;
GRANT INSERT ON frame_features TO linewatch_writer;
GRANT SELECT ON defect_classes, frame_features, defect_labels, defect_label_counts TO linewatch_registrar;
