-- Champion against challenger, per asset and day: what the routed (champion) alerts and the shadow
-- (challenger) alerts would each have told the plant, and how they compare on dispositioned events.
--
-- One alert per alert_id: its first 'open' row (kind = 'anomaly'; retrain_recommended alerts are about
-- models, not the process). Its verdict is the latest disposition of that alert_id. Two alerts of
-- opposite sides *match* when their open times lie within 10 minutes (600 s) of each other; each alert's
-- match is the other side's alert of the same asset nearest in open time. Open times, not intervals:
-- a shadow alert closes on its own hysteresis, and most alerts of a day are too short for overlap to
-- say more than nearness does. Days follow the session TimeZone, like the SPC views.
--
-- Estimated false alarms: the champion's are its alerts dispositioned false_alarm or
-- acceptable_variation. Shadow alerts are never routed, so operators rarely see them: a shadow alert
-- counts as a false alarm when it is dispositioned so itself or, undispositioned, when it matches a
-- champion alert dispositioned so (the same event, already judged).
--
-- Detection delay: over matched pairs in which either alert is dispositioned true_defect, the shadow's
-- open time minus the champion's, in seconds (negative = the challenger saw it first).

CREATE OR REPLACE VIEW champion_challenger AS
WITH opened AS (
    SELECT DISTINCT ON (alert_id) alert_id, asset_id, shadow, ts AS opened_at
    FROM alerts
    WHERE state = 'open' AND kind = 'anomaly'
    ORDER BY alert_id, ts
), verdicts AS (
    SELECT DISTINCT ON (alert_id) alert_id, verdict
    FROM dispositions
    WHERE alert_id IS NOT NULL
    ORDER BY alert_id, ts DESC, written_at DESC
), judged AS (
    SELECT o.alert_id, o.asset_id, o.shadow, o.opened_at, v.verdict
    FROM opened o LEFT JOIN verdicts v USING (alert_id)
), matched AS (
    -- The match is looked up in `alerts` itself, through its (asset_id, ts) index, so the view stays
    -- a range scan per alert however long the history.
    SELECT x.asset_id, x.shadow, x.opened_at, x.verdict,
           m.ts AS match_opened_at, mv.verdict AS match_verdict
    FROM judged x
    LEFT JOIN LATERAL (
        SELECT a.ts, a.alert_id
        FROM alerts a
        WHERE a.asset_id = x.asset_id AND a.state = 'open' AND a.kind = 'anomaly' AND a.shadow <> x.shadow
          AND a.ts BETWEEN x.opened_at - interval '600 seconds' AND x.opened_at + interval '600 seconds'
        ORDER BY abs(extract(epoch FROM a.ts - x.opened_at)), a.ts, a.alert_id
        LIMIT 1
    ) m ON true
    LEFT JOIN verdicts mv ON mv.alert_id = m.alert_id
), per_day AS (
    SELECT asset_id, opened_at::date AS day,
           count(*) FILTER (WHERE NOT shadow) AS champion_alerts,
           count(*) FILTER (WHERE shadow) AS shadow_alerts,
           count(*) FILTER (WHERE NOT shadow AND match_opened_at IS NOT NULL) AS champion_matched,
           count(*) FILTER (WHERE shadow AND match_opened_at IS NOT NULL) AS shadow_matched,
           count(*) FILTER (WHERE NOT shadow AND verdict IS NOT NULL) AS champion_dispositioned,
           count(*) FILTER (WHERE NOT shadow AND verdict IN ('false_alarm', 'acceptable_variation'))
               AS champion_false_alarms,
           count(*) FILTER (WHERE shadow AND (verdict IN ('false_alarm', 'acceptable_variation')
                                              OR (verdict IS NULL
                                                  AND match_verdict IN ('false_alarm', 'acceptable_variation'))))
               AS shadow_false_alarms_est,
           count(*) FILTER (WHERE NOT shadow AND verdict = 'true_defect') AS champion_true_defects,
           count(*) FILTER (WHERE NOT shadow AND verdict = 'true_defect' AND match_opened_at IS NULL)
               AS shadow_missed_defects,
           count(*) FILTER (WHERE shadow AND verdict = 'true_defect' AND match_opened_at IS NULL)
               AS champion_missed_defects,
           count(*) FILTER (WHERE NOT shadow AND match_opened_at IS NOT NULL
                            AND 'true_defect' IN (verdict, match_verdict)) AS delay_pairs,
           avg(extract(epoch FROM match_opened_at - opened_at))
               FILTER (WHERE NOT shadow AND 'true_defect' IN (verdict, match_verdict)) AS mean_delay_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM match_opened_at - opened_at))
               FILTER (WHERE NOT shadow AND 'true_defect' IN (verdict, match_verdict)) AS median_delay_s
    FROM matched
    GROUP BY asset_id, opened_at::date
)
SELECT asset_id, day, champion_alerts, shadow_alerts, champion_matched, shadow_matched,
       champion_matched::float8 / NULLIF(champion_alerts, 0) AS champion_agreement,
       shadow_matched::float8 / NULLIF(shadow_alerts, 0) AS shadow_agreement,
       champion_dispositioned, champion_false_alarms, shadow_false_alarms_est,
       champion_true_defects, shadow_missed_defects, champion_missed_defects,
       delay_pairs, mean_delay_s::float8 AS mean_delay_s, median_delay_s::float8 AS median_delay_s,
       600.0::float8 AS match_tolerance_s
FROM per_day;

COMMENT ON VIEW champion_challenger IS
'Per asset and day: routed (champion) against shadow (challenger) anomaly alerts: counts, agreement within '
'10 minutes, estimated false alarms, missed dispositioned defects and the shadow''s detection delay (docs/sql.md).';

GRANT SELECT ON champion_challenger TO linewatch_reader;
