-- Drift of every model version's scores and inputs against its training reference (issue 11).
-- One row per check: `kind` 'score' compares the calibrated tail probabilities of a recent window
-- with Uniform(0, 1), which is what calibration promises on normal data, and the window's alarm
-- rate with the promised false-alarm rate and its 90 % interval; `kind` 'input' compares one input
-- feature (`feature`) with the reference sample stored with the model. `retrain_recommended` means
-- the drift persisted: retrain on recent known-good data. A drift row never changes a threshold.

CREATE TABLE IF NOT EXISTS drift (
    ts                   timestamptz      NOT NULL,  -- event time of the newest score or input in the window
    asset_id             text             NOT NULL,
    modality             text             NOT NULL CHECK (modality IN ('spc', 'signals', 'frames')),
    detector             text             NOT NULL,
    model_version        text             NOT NULL,
    kind                 text             NOT NULL CHECK (kind IN ('score', 'input')),
    feature              text             NOT NULL DEFAULT '',  -- '' for score drift
    n                    integer          NOT NULL CHECK (n >= 0),
    psi                  double precision NOT NULL,
    ks_statistic         double precision NOT NULL,
    ks_pvalue            double precision NOT NULL CHECK (ks_pvalue BETWEEN 0 AND 1),
    page_hinkley         boolean          NOT NULL DEFAULT false,  -- Page-Hinkley (scores) or ADWIN (inputs) fired
    alarm_rate           double precision,
    promised_far         double precision,
    promised_far_low     double precision,
    promised_far_high    double precision,
    drifted              boolean          NOT NULL,
    retrain_recommended  boolean          NOT NULL,
    detail               text             NOT NULL DEFAULT '',
    PRIMARY KEY (ts, asset_id, detector, model_version, kind, feature)
);
CREATE INDEX IF NOT EXISTS drift_asset_ts ON drift (asset_id, ts DESC);
CREATE INDEX IF NOT EXISTS drift_retrain ON drift (ts DESC) WHERE retrain_recommended;
COMMENT ON TABLE drift IS
    'Drift checks of model versions per asset: PSI/KS of scores vs Uniform(0,1) and of inputs vs the training '
    'reference, Page-Hinkley/ADWIN, alarm rate vs the promised false-alarm interval. Retrain, never re-threshold.';
COMMENT ON COLUMN drift.retrain_recommended IS
    'The baseline moved and stayed moved (two disjoint windows drifted): retrain on recent known-good data.';

-- The newest check per asset, detector, version, kind and feature: what Grafana and SPC engineers read.
CREATE OR REPLACE VIEW drift_latest AS
SELECT DISTINCT ON (asset_id, detector, model_version, kind, feature) *
FROM drift
ORDER BY asset_id, detector, model_version, kind, feature, ts DESC;
COMMENT ON VIEW drift_latest IS 'Latest drift row per asset / detector / model version / kind / feature.';

GRANT SELECT ON drift, drift_latest TO linewatch_reader;
GRANT SELECT, INSERT ON drift TO linewatch_writer;
GRANT SELECT ON drift_latest TO linewatch_writer;
