-- Views for SPC / quality engineers: individuals (I-MR) charts with run rules, process capability
-- per day and per shift, and anomalies with their contributors and the part's measured values.
-- Plain SQL on purpose: the same file runs on PostgreSQL 15+ and on TimescaleDB (hypertables and
-- continuous aggregates are read like any table). Documented for users in docs/sql.md.
--
-- Conventions shared by the views below
-- * A series is one (asset_id, sku, characteristic), ordered by (ts, event_id); event_id breaks
--   ties so two parts measured in the same microsecond still have a stable order.
-- * sigma "within" = average moving range of consecutive values / d2(2), with the textbook
--   d2(2) = 1.128 (so hand calculations and Minitab agree; linewatch.detectors integrates d2
--   numerically, 1.12836, a 0.03 % difference).
-- * Every window partitions by asset_id, sku and characteristic first, so PostgreSQL pushes a
--   WHERE on those columns down to the table scan; a WHERE on ts is applied after the windows
--   (it must be: a time filter must not change the limits), so filter by characteristic.

-- ---------------------------------------------------------------------------------------------
-- Individuals chart.
-- Phase I baseline = the first 25 values of each series (Montgomery's usual 20-25). The limits
-- are frozen from those points: centre line = their mean, sigma = their MR-bar / 1.128, limits
-- = centre +/- 3 sigma, moving-range UCL = D4(2) * MR-bar = 3.267 * MR-bar. A frozen Phase I
-- baseline (rather than a trailing window) is the textbook I-MR practice: a trailing window
-- would drift along with a slow shift and hide exactly what the chart is for. While a series has
-- fewer than 25 values the limits are provisional (baseline_n < 25) and move with each value.
-- To re-baseline after a deliberate process change, start a new sku or characteristic name, or
-- query the table with your own window (docs/sql.md shows how).
--
-- Run rules follow linewatch.detectors.spc_rules (Nelson 1984 numbering) and flag the point
-- that completes the pattern; "k of m" rules count a partial window at the start of a series
-- and require the flagged point itself to be in the zone; a point exactly on the centre line
-- belongs to neither side; an exact tie between neighbours breaks trends and alternations.
-- NULL flags mean "cannot be judged": the rules that need sigma (all but nelson3 and nelson4)
-- are NULL when the baseline has fewer than 2 points or no variation (sigma = 0).
CREATE OR REPLACE VIEW spc_individuals_chart AS
SELECT r.ts, r.asset_id, r.sku, r.characteristic, r.part_id, r.shift, r.event_id,
       r.seq, r.seq <= 25 AS in_baseline,
       r.value, r.moving_range,
       r.baseline_n, r.center_line, r.sigma,
       r.center_line + 3 * r.sigma AS ucl,
       r.center_line - 3 * r.sigma AS lcl,
       r.mr_bar, 3.267 * r.mr_bar AS mr_ucl,
       r.z AS z_score,
       r.lsl, r.usl, r.target,
       r.moving_range > 3.267 * r.mr_bar AS mr_beyond_limit,
       r.nelson1_beyond_3sigma, r.nelson2_9_same_side, r.nelson3_6_trend, r.nelson4_14_alternating,
       r.nelson5_2_of_3_beyond_2sigma, r.nelson6_4_of_5_beyond_1sigma, r.nelson7_15_within_1sigma,
       r.nelson8_8_beyond_1sigma, r.we4_8_same_side,
       (r.nelson1_beyond_3sigma OR r.nelson2_9_same_side OR r.nelson3_6_trend OR r.nelson4_14_alternating
        OR r.nelson5_2_of_3_beyond_2sigma OR r.nelson6_4_of_5_beyond_1sigma OR r.nelson7_15_within_1sigma
        OR r.nelson8_8_beyond_1sigma) AS out_of_control,
       array_remove(ARRAY[
           CASE WHEN r.nelson1_beyond_3sigma THEN 'nelson1' END,
           CASE WHEN r.nelson2_9_same_side THEN 'nelson2' END,
           CASE WHEN r.nelson3_6_trend THEN 'nelson3' END,
           CASE WHEN r.nelson4_14_alternating THEN 'nelson4' END,
           CASE WHEN r.nelson5_2_of_3_beyond_2sigma THEN 'nelson5' END,
           CASE WHEN r.nelson6_4_of_5_beyond_1sigma THEN 'nelson6' END,
           CASE WHEN r.nelson7_15_within_1sigma THEN 'nelson7' END,
           CASE WHEN r.nelson8_8_beyond_1sigma THEN 'nelson8' END
       ]::text[], NULL) AS rules_violated
FROM (
    SELECT c.*,
           abs(c.z) > 3 AS nelson1_beyond_3sigma,
           (c.above_9 = 9 OR c.below_9 = 9) AS nelson2_9_same_side,
           (c.up_5 = 5 OR c.down_5 = 5) AS nelson3_6_trend,
           c.flips_12 = 12 AS nelson4_14_alternating,
           ((c.z > 2 AND c.above2_3 >= 2) OR (c.z < -2 AND c.below2_3 >= 2)) AS nelson5_2_of_3_beyond_2sigma,
           ((c.z > 1 AND c.above1_5 >= 4) OR (c.z < -1 AND c.below1_5 >= 4)) AS nelson6_4_of_5_beyond_1sigma,
           c.within1_15 = 15 AS nelson7_15_within_1sigma,
           c.outside1_8 = 8 AS nelson8_8_beyond_1sigma,
           (c.above_8 = 8 OR c.below_8 = 8) AS we4_8_same_side
    FROM (
        SELECT s.*,
               sum((s.z > 0)::int) OVER w9 AS above_9,
               sum((s.z < 0)::int) OVER w9 AS below_9,
               sum((s.z > 0)::int) OVER w8 AS above_8,
               sum((s.z < 0)::int) OVER w8 AS below_8,
               sum(coalesce((s.direction > 0)::int, 0)) OVER w5 AS up_5,
               sum(coalesce((s.direction < 0)::int, 0)) OVER w5 AS down_5,
               sum(coalesce((s.direction * s.prev_direction < 0)::int, 0)) OVER w12 AS flips_12,
               sum((s.z > 2)::int) OVER w3 AS above2_3,
               sum((s.z < -2)::int) OVER w3 AS below2_3,
               sum((s.z > 1)::int) OVER w5 AS above1_5,
               sum((s.z < -1)::int) OVER w5 AS below1_5,
               sum((abs(s.z) < 1)::int) OVER w15 AS within1_15,
               sum((abs(s.z) > 1)::int) OVER w8 AS outside1_8
        FROM (
            SELECT b.*,
                   b.mr_bar / 1.128 AS sigma,
                   (b.value - b.center_line) / nullif(b.mr_bar / 1.128, 0) AS z
            FROM (
                SELECT m.*,
                       count(*) FILTER (WHERE m.seq <= 25) OVER p AS baseline_n,
                       avg(m.value) FILTER (WHERE m.seq <= 25) OVER p AS center_line,
                       avg(m.moving_range) FILTER (WHERE m.seq <= 25) OVER p AS mr_bar,
                       lag(m.direction) OVER o AS prev_direction
                FROM (
                    SELECT x.ts, x.event_id, x.asset_id, x.sku, x.characteristic, x.part_id, x.shift,
                           x.value, x.lsl, x.usl, x.target,
                           row_number() OVER o AS seq,
                           abs(x.value - lag(x.value) OVER o) AS moving_range,
                           sign(x.value - lag(x.value) OVER o) AS direction
                    FROM spc_measurements x
                    WINDOW o AS (PARTITION BY x.asset_id, x.sku, x.characteristic ORDER BY x.ts, x.event_id)
                ) m
                WINDOW p AS (PARTITION BY m.asset_id, m.sku, m.characteristic),
                       o AS (PARTITION BY m.asset_id, m.sku, m.characteristic ORDER BY m.ts, m.event_id)
            ) b
        ) s
        WINDOW w3 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                      ROWS 2 PRECEDING),
               w5 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                      ROWS 4 PRECEDING),
               w8 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                      ROWS 7 PRECEDING),
               w9 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                      ROWS 8 PRECEDING),
               w12 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                       ROWS 11 PRECEDING),
               w15 AS (PARTITION BY s.asset_id, s.sku, s.characteristic ORDER BY s.ts, s.event_id
                       ROWS 14 PRECEDING)
    ) c
) r;

COMMENT ON VIEW spc_individuals_chart IS
'Individuals (I-MR) chart per asset/sku/characteristic, ordered by (ts, event_id). Limits are frozen from a Phase I '
'baseline of the first 25 values of the series: centre = their mean, sigma = MR-bar/1.128, limits = centre +/- 3 sigma, '
'MR UCL = 3.267 MR-bar (provisional while baseline_n < 25). Run rules use Nelson numbering (WE1 = nelson1, '
'WE2 = nelson5, WE3 = nelson6, WE4 = we4_8_same_side) and flag the point completing the pattern; NULL = cannot judge '
'(the sigma-based rules when the baseline has no usable sigma). Filter on asset_id/sku/characteristic: they are pushed into the scan; time filters are not.';
COMMENT ON COLUMN spc_individuals_chart.seq IS 'Position of the value in its series (1 = first ever measured).';
COMMENT ON COLUMN spc_individuals_chart.in_baseline IS 'True for the first 25 values: the Phase I points the limits come from.';
COMMENT ON COLUMN spc_individuals_chart.baseline_n IS 'How many values the limits were estimated from (25 once the baseline is complete).';
COMMENT ON COLUMN spc_individuals_chart.sigma IS 'Within (short-term) sigma = MR-bar / 1.128 over the baseline.';
COMMENT ON COLUMN spc_individuals_chart.z_score IS '(value - center_line) / sigma; NULL when sigma is unknown or zero.';
COMMENT ON COLUMN spc_individuals_chart.mr_beyond_limit IS 'Moving range above 3.267 MR-bar (the MR chart''s rule 1).';
COMMENT ON COLUMN spc_individuals_chart.nelson2_9_same_side IS '9 values in a row strictly on one side of the centre line.';
COMMENT ON COLUMN spc_individuals_chart.nelson3_6_trend IS '6 values in a row steadily increasing or decreasing.';
COMMENT ON COLUMN spc_individuals_chart.nelson4_14_alternating IS '14 values in a row alternating up and down.';
COMMENT ON COLUMN spc_individuals_chart.nelson5_2_of_3_beyond_2sigma IS '2 of the last 3 values beyond 2 sigma on the same side (WE rule 2).';
COMMENT ON COLUMN spc_individuals_chart.nelson6_4_of_5_beyond_1sigma IS '4 of the last 5 values beyond 1 sigma on the same side (WE rule 3).';
COMMENT ON COLUMN spc_individuals_chart.nelson7_15_within_1sigma IS '15 values in a row within 1 sigma (stratification).';
COMMENT ON COLUMN spc_individuals_chart.nelson8_8_beyond_1sigma IS '8 values in a row beyond 1 sigma, either side (mixture).';
COMMENT ON COLUMN spc_individuals_chart.we4_8_same_side IS '8 values in a row on one side (Western Electric rule 4; not part of out_of_control).';
COMMENT ON COLUMN spc_individuals_chart.rules_violated IS 'Names of the Nelson rules this value completes, e.g. {nelson1,nelson5}.';

-- ---------------------------------------------------------------------------------------------
-- Capability per calendar day. Days follow the session TimeZone (SET TimeZone = 'Europe/Berlin',
-- or ALTER ROLE ... SET timezone for a login). Rows are also grouped by the spec limits carried
-- on the measurements, so a day on which the limits changed shows one row per set of limits.
CREATE OR REPLACE VIEW spc_capability_daily AS
SELECT g.asset_id, g.sku, g.characteristic, g.day, g.lsl, g.usl,
       g.n, g.mean, g.stddev, g.sigma_within,
       CASE WHEN g.lsl IS NOT NULL AND g.usl IS NOT NULL
            THEN (g.usl - g.lsl) / nullif(6 * g.sigma_within, 0) END AS cp,
       least((g.usl - g.mean) / nullif(3 * g.sigma_within, 0),
             (g.mean - g.lsl) / nullif(3 * g.sigma_within, 0)) AS cpk,
       CASE WHEN g.lsl IS NOT NULL AND g.usl IS NOT NULL
            THEN (g.usl - g.lsl) / nullif(6 * g.stddev, 0) END AS pp,
       least((g.usl - g.mean) / nullif(3 * g.stddev, 0),
             (g.mean - g.lsl) / nullif(3 * g.stddev, 0)) AS ppk,
       g.first_ts, g.last_ts
FROM (
    SELECT d.asset_id, d.sku, d.characteristic, d.day, d.lsl, d.usl,
           count(*) AS n,
           avg(d.value) AS mean,
           stddev_samp(d.value) AS stddev,
           avg(d.moving_range) / 1.128 AS sigma_within,
           min(d.ts) AS first_ts,
           max(d.ts) AS last_ts
    FROM (
        SELECT x.asset_id, x.sku, x.characteristic, x.ts::date AS day, x.lsl, x.usl, x.ts, x.value,
               abs(x.value - lag(x.value) OVER (
                   PARTITION BY x.asset_id, x.sku, x.characteristic, x.ts::date, x.lsl, x.usl
                   ORDER BY x.ts, x.event_id)) AS moving_range
        FROM spc_measurements x
    ) d
    GROUP BY d.asset_id, d.sku, d.characteristic, d.day, d.lsl, d.usl
) g;

COMMENT ON VIEW spc_capability_daily IS
'Process capability per asset/sku/characteristic and calendar day (session TimeZone) and set of spec limits. '
'Cp/Cpk use the within-subgroup sigma estimated from the moving range of consecutive values that day '
'(MR-bar/1.128): the short-term potential. Pp/Ppk use the overall sample standard deviation of that day: what was '
'actually delivered, drift included. With one spec limit Cp/Pp are NULL and Cpk/Ppk are the one-sided Cpu/Cpl '
'(Ppu/Ppl). NULL also when sigma is 0 or n < 2. Indices only mean something for a process in control.';
COMMENT ON COLUMN spc_capability_daily.sigma_within IS 'MR-bar / 1.128 over consecutive values of the day (short-term sigma).';
COMMENT ON COLUMN spc_capability_daily.stddev IS 'Overall sample standard deviation of the day (n - 1).';

-- ---------------------------------------------------------------------------------------------
-- Capability per shift occurrence. One occurrence = a run of consecutive measurements of a series
-- with the same shift label, split where more than 6 hours pass without a measurement; its day
-- is the day it started, so a night shift from 22:00 to 06:00 is one row, not two. The 6-hour gap
-- is shorter than the time between two occurrences of the same shift (at least 12 hours apart
-- with two 12-hour shifts) and longer than any normal stop within a shift.
CREATE OR REPLACE VIEW spc_capability_shift AS
SELECT g.asset_id, g.sku, g.characteristic, g.day, g.shift, g.shift_start, g.shift_end, g.lsl, g.usl,
       g.n, g.mean, g.stddev, g.sigma_within,
       CASE WHEN g.lsl IS NOT NULL AND g.usl IS NOT NULL
            THEN (g.usl - g.lsl) / nullif(6 * g.sigma_within, 0) END AS cp,
       least((g.usl - g.mean) / nullif(3 * g.sigma_within, 0),
             (g.mean - g.lsl) / nullif(3 * g.sigma_within, 0)) AS cpk,
       CASE WHEN g.lsl IS NOT NULL AND g.usl IS NOT NULL
            THEN (g.usl - g.lsl) / nullif(6 * g.stddev, 0) END AS pp,
       least((g.usl - g.mean) / nullif(3 * g.stddev, 0),
             (g.mean - g.lsl) / nullif(3 * g.stddev, 0)) AS ppk
FROM (
    SELECT o.asset_id, o.sku, o.characteristic, o.occurrence, o.shift, o.lsl, o.usl,
           min(o.occurrence_start)::date AS day,
           min(o.occurrence_start) AS shift_start,
           max(o.occurrence_end) AS shift_end,
           count(*) AS n,
           avg(o.value) AS mean,
           stddev_samp(o.value) AS stddev,
           avg(o.moving_range) / 1.128 AS sigma_within
    FROM (
        SELECT i.*,
               min(i.ts) OVER occ AS occurrence_start,
               max(i.ts) OVER occ AS occurrence_end,
               abs(i.value - lag(i.value) OVER (
                   PARTITION BY i.asset_id, i.sku, i.characteristic, i.occurrence, i.lsl, i.usl
                   ORDER BY i.ts, i.event_id)) AS moving_range
        FROM (
            SELECT t.*,
                   sum(CASE WHEN t.prev_ts IS NULL
                              OR t.shift IS DISTINCT FROM t.prev_shift
                              OR t.ts - t.prev_ts > INTERVAL '6 hours'
                            THEN 1 ELSE 0 END)
                       OVER (PARTITION BY t.asset_id, t.sku, t.characteristic ORDER BY t.ts, t.event_id)
                       AS occurrence
            FROM (
                SELECT x.asset_id, x.sku, x.characteristic, x.ts, x.event_id, x.shift, x.value, x.lsl, x.usl,
                       lag(x.ts) OVER w AS prev_ts,
                       lag(x.shift) OVER w AS prev_shift
                FROM spc_measurements x
                WINDOW w AS (PARTITION BY x.asset_id, x.sku, x.characteristic ORDER BY x.ts, x.event_id)
            ) t
        ) i
        WINDOW occ AS (PARTITION BY i.asset_id, i.sku, i.characteristic, i.occurrence)
    ) o
    GROUP BY o.asset_id, o.sku, o.characteristic, o.occurrence, o.shift, o.lsl, o.usl
) g;

COMMENT ON VIEW spc_capability_shift IS
'Process capability per asset/sku/characteristic and shift occurrence (consecutive measurements with the same shift '
'label, split after 6 hours without one; day = the day the occurrence started, session TimeZone) and set of spec '
'limits. Cp/Cpk use the within-subgroup sigma from the moving range of consecutive values in the occurrence '
'(MR-bar/1.128); Pp/Ppk use the overall sample standard deviation. One-sided specs: Cp/Pp NULL, Cpk/Ppk one-sided.';
COMMENT ON COLUMN spc_capability_shift.shift_start IS 'First measurement of the shift occurrence.';
COMMENT ON COLUMN spc_capability_shift.shift_end IS 'Last measurement of the shift occurrence.';

-- ---------------------------------------------------------------------------------------------
-- Anomalies with their top three contributors side by side and, for SPC anomalies, every value
-- measured on the part (joined on the event's ts and event_id: the primary key, so one index
-- probe per anomaly). Contributors are taken in the order the detector stored them (largest
-- first, the same rank as anomaly_contributors). Camera and signal anomalies have no SPC event
-- of their own: join them to spc_measurements on asset_id and part_id with a time bound
-- (docs/sql.md has the query).
CREATE OR REPLACE VIEW anomalies_with_context AS
SELECT a.ts, a.asset_id, a.sku, a.part_id, a.modality, a.detector, a.model_version,
       a.calibrated_score, a.threshold, a.tail_probability, a.event_id,
       jsonb_array_length(CASE jsonb_typeof(a.explanation) WHEN 'array' THEN a.explanation END)
           AS n_contributors,
       a.explanation -> 0 ->> 'name' AS feature_1,
       (a.explanation -> 0 ->> 'value')::double precision AS contribution_1,
       (a.explanation -> 0 ->> 'share')::double precision AS share_1,
       (mv.measured_values ->> (a.explanation -> 0 ->> 'name'))::double precision AS measured_1,
       a.explanation -> 1 ->> 'name' AS feature_2,
       (a.explanation -> 1 ->> 'value')::double precision AS contribution_2,
       (a.explanation -> 1 ->> 'share')::double precision AS share_2,
       (mv.measured_values ->> (a.explanation -> 1 ->> 'name'))::double precision AS measured_2,
       a.explanation -> 2 ->> 'name' AS feature_3,
       (a.explanation -> 2 ->> 'value')::double precision AS contribution_3,
       (a.explanation -> 2 ->> 'share')::double precision AS share_3,
       (mv.measured_values ->> (a.explanation -> 2 ->> 'name'))::double precision AS measured_3,
       mv.measured_values,
       mv.out_of_spec
FROM anomalies a
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(m.characteristic, m.value) AS measured_values,
           array_agg(m.characteristic ORDER BY m.characteristic)
               FILTER (WHERE m.value < m.lsl OR m.value > m.usl) AS out_of_spec
    FROM spc_measurements m
    WHERE a.modality = 'spc' AND m.ts = a.ts AND m.event_id = a.event_id
) mv ON true;

COMMENT ON VIEW anomalies_with_context IS
'Anomalous verdicts (the anomalies view) with the top 3 contributors as columns (feature_k, contribution_k, share_k '
'in stored rank order) and, for SPC anomalies, the part''s measured values: measured_values = {characteristic: value}, '
'measured_k = the value of feature_k when it is a measured characteristic, out_of_spec = characteristics outside '
'their lsl/usl. Camera and signal anomalies have NULL measurements.';

GRANT SELECT ON spc_individuals_chart, spc_capability_daily, spc_capability_shift, anomalies_with_context
    TO linewatch_reader;
