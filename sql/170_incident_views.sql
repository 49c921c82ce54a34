-- Incident views: one row per alert (its whole lifecycle folded), the open ones, and every
-- disposition joined to its alert, the scores behind it and the model versions that made them.
-- Plain SQL, the same on TimescaleDB and PostgreSQL. Documented in docs/sql.md ("The views").

-- alert_incidents: the lifecycle rows of one alert folded into one; the latest state's fields win, and
-- the latest disposition is the verdict (an operator may correct an earlier one).
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
           modalities, model_versions, note
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
       v.verdict, v.defect_class, v.operator AS disposition_operator, v.disposition_ts
FROM lifecycle l
JOIN latest a USING (alert_id)
LEFT JOIN verdicts v USING (alert_id);
COMMENT ON VIEW alert_incidents IS
'One row per alert_id: its lifecycle (opened, acknowledged, closed, duration while open), worst severity and score, '
'last contributors and the latest disposition.';

CREATE OR REPLACE VIEW open_alerts AS
SELECT * FROM alert_incidents WHERE last_state <> 'close';
COMMENT ON VIEW open_alerts IS 'alert_incidents whose latest event is not a close (one re-opened in its cool-down is open).';

-- One row per disposition and score behind it: alert-level dispositions reach their scores
-- through alerts.scores (every lifecycle row's refs, once each), event-level ones through the
-- event's own scores; model_versions says how the scoring model was trained and calibrated.
CREATE OR REPLACE VIEW disposition_details AS
WITH refs AS (
    SELECT DISTINCT d.disposition_id, (r ->> 'ts')::timestamptz AS ts, (r ->> 'event_id')::uuid AS event_id,
           r ->> 'detector' AS detector
    FROM dispositions d
    JOIN alerts a ON a.alert_id = d.alert_id
    CROSS JOIN LATERAL jsonb_array_elements(a.scores) AS r
    UNION
    SELECT d.disposition_id, s.ts, s.event_id, s.detector
    FROM dispositions d
    JOIN scores s ON s.event_id = d.event_id
    WHERE d.alert_id IS NULL
), alert_facts AS (
    SELECT DISTINCT ON (alert_id) alert_id, asset_id, kind, route, shadow, opened_at
    FROM alerts ORDER BY alert_id, ts
)
SELECT d.disposition_id, d.ts AS disposition_ts, d.verdict, d.defect_class, d.operator, d.note,
       d.alert_id, d.event_id AS disposition_event_id,
       af.kind AS alert_kind, af.route AS alert_route, af.shadow AS alert_shadow, af.opened_at AS alert_opened_at,
       coalesce(s.asset_id, af.asset_id) AS asset_id,
       s.ts AS score_ts, s.event_id, s.modality, s.detector, s.model_version, s.calibrated_score, s.threshold,
       s.is_anomaly, s.top_feature, s.part_id,
       mv.model_id, mv.scope_asset, mv.scope_sku, mv.train_start, mv.train_end, mv.n_samples,
       mv.calibration ->> 'target_far' AS model_target_far, mv.created_at AS model_created_at
FROM dispositions d
LEFT JOIN alert_facts af ON af.alert_id = d.alert_id
LEFT JOIN refs ON refs.disposition_id = d.disposition_id
LEFT JOIN scores s ON s.ts = refs.ts AND s.event_id = refs.event_id AND s.detector = refs.detector
LEFT JOIN model_versions mv ON mv.version = s.model_version AND mv.detector = s.detector
                            AND mv.modality = s.modality;
COMMENT ON VIEW disposition_details IS
'Each disposition with its alert, the score rows behind it and the model versions that produced them '
'(a disposition whose alert links no score rows appears once, with NULL score columns).';

GRANT SELECT ON alert_incidents, open_alerts, disposition_details TO linewatch_reader;
