-- How sure each model version's threshold is, queryable in SQL and Grafana.
-- `calibration` (jsonb) now also carries the calibration report under "report": the effective
-- sample size of the out-of-fold normal scores, the 90 % interval of the false-alarm rate the
-- threshold will realise, and warnings. `provisional` is true when the training data could not
-- resolve the false-alarm target: such a model alarms only above every normal score it was
-- calibrated on, and should be retrained on more known-good data.

ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS provisional boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN model_versions.provisional IS
    'true: the training data could not resolve the false-alarm target; conservative threshold, retrain on more data';
