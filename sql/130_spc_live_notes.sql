-- What a model's training data covered, stored with its version, and the notes the live SPC path
-- writes into a score's explanation, as views an SPC engineer can query.
--
-- model_versions.coverage: rows per value of each context dimension (asset, sku, shift, lot,
-- machine_state, hour of day as 24 bins) in the training data; NULL for versions trained before
-- it was recorded or without context columns. Layout: linewatch.coverage.Coverage.to_dict.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS coverage jsonb;
COMMENT ON COLUMN model_versions.coverage IS
    'Training-data coverage: {"layout", "n_rows", "counts": {dimension: {value: rows}}}; see linewatch.coverage.';

-- Run rules (Western Electric / Nelson) evaluated live per asset and characteristic against the
-- model's Phase I centre and within-sigma: one row per violated rule at a scored event. The same
-- entries travel in the score message's explanation (kind = 'rule').
CREATE OR REPLACE VIEW spc_rule_violations AS
SELECT s.ts, s.event_id, s.asset_id, s.sku, s.part_id, s.detector, s.model_version,
       e->>'name' AS characteristic,
       e->>'detail' AS rule,
       (e->>'value')::double precision AS z,
       s.is_anomaly
FROM scores s
CROSS JOIN LATERAL jsonb_array_elements(s.explanation) AS e
WHERE s.modality = 'spc' AND e->>'kind' = 'rule';
COMMENT ON VIEW spc_rule_violations IS
    'Run-rule violations found live, per event, characteristic and rule (z = standardised value).';

-- Scores of events whose context (shift, lot, SKU, asset, machine state, hour) the model never
-- saw in training: the verdict there is extrapolation.
CREATE OR REPLACE VIEW scores_unseen_context AS
SELECT s.ts, s.event_id, s.modality, s.asset_id, s.sku, s.part_id, s.detector, s.model_version,
       e->>'name' AS dimension,
       e->>'detail' AS note,
       s.is_anomaly
FROM scores s
CROSS JOIN LATERAL jsonb_array_elements(s.explanation) AS e
WHERE e->>'kind' = 'unseen_context';
COMMENT ON VIEW scores_unseen_context IS
    'Scores of events from a context (dimension) the model''s training data never contained.';

GRANT SELECT ON spc_rule_violations, scores_unseen_context TO linewatch_reader;
GRANT SELECT ON spc_rule_violations, scores_unseen_context TO linewatch_writer;
