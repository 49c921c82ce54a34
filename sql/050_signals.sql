-- Per-window features of the signals path (vibration, current, temperature, ...): one row per
-- window of one sensor, written by the signals agent in the same transaction as the window's
-- scores. Plain PostgreSQL here; 060_signals_aggregates.timescale.sql turns the table into a
-- hypertable where TimescaleDB is available. Scores of the multi-sensor frames go to `scores`
-- (modality 'signals').

CREATE TABLE IF NOT EXISTS signal_features (
    ts                    timestamptz      NOT NULL,  -- window start
    event_id              uuid             NOT NULL,  -- deterministic: UUIDv5 of (asset, sensor, start)
    asset_id              text             NOT NULL,
    sensor                text             NOT NULL,
    kind                  text             NOT NULL,
    unit                  text             NOT NULL,
    sample_rate_hz        double precision NOT NULL CHECK (sample_rate_hz > 0),
    n_samples             integer          NOT NULL CHECK (n_samples > 0),
    mean                  double precision NOT NULL,
    rms                   double precision NOT NULL,
    peak                  double precision NOT NULL,
    crest_factor          double precision NOT NULL,
    kurtosis              double precision NOT NULL,
    skewness              double precision NOT NULL,
    spectral_centroid_hz  double precision,
    dominant_hz           double precision,
    features              jsonb            NOT NULL,
    quality               text[]           NOT NULL DEFAULT '{}',
    written_at            timestamptz      NOT NULL DEFAULT clock_timestamp(),  -- when the row was written
    PRIMARY KEY (ts, event_id)
);
CREATE INDEX IF NOT EXISTS signal_features_asset_sensor_ts ON signal_features (asset_id, sensor, ts DESC);
-- Windows the data-quality gate rejected are rare and exactly what a maintenance engineer looks for.
CREATE INDEX IF NOT EXISTS signal_features_quality_issues
    ON signal_features (ts DESC) WHERE cardinality(quality) > 0;

COMMENT ON TABLE signal_features IS
'One row per window of one sensor (the signals topic): headline features as columns, every feature in features. '
'Scores of the per-asset multi-sensor frames are in scores (modality = ''signals'').';
COMMENT ON COLUMN signal_features.ts IS 'Start of the window (UTC).';
COMMENT ON COLUMN signal_features.mean IS 'Mean of the window: the reading itself for slow sensors (temperature, pressure).';
COMMENT ON COLUMN signal_features.rms IS 'Root mean square of the raw window, DC included (a sine of amplitude A gives A/sqrt(2)).';
COMMENT ON COLUMN signal_features.crest_factor IS 'peak / rms; impacts (bearing defects) raise it.';
COMMENT ON COLUMN signal_features.kurtosis IS 'Pearson kurtosis of the mean-removed window: 1.5 sine, 3 Gaussian noise, >> 3 impacts.';
COMMENT ON COLUMN signal_features.spectral_centroid_hz IS 'Power-weighted mean frequency; NULL for windows too short for a spectrum.';
COMMENT ON COLUMN signal_features.dominant_hz IS 'Frequency of the strongest spectral line; NULL for windows too short for a spectrum.';
COMMENT ON COLUMN signal_features.features IS
'Every feature of the window as {name: value} (docs/signals.md lists them). Band energies (band_<lo>_<hi>hz) and '
'peak powers (peak<i>_power) are log10 of power in units squared.';
COMMENT ON COLUMN signal_features.quality IS
'Data-quality reason codes of the window (flatline, stuck, saturated, missing, out_of_range, nan); empty = usable. '
'Scores of an asset with a bad window are not flagged as anomalies.';

GRANT SELECT ON signal_features TO linewatch_reader;
GRANT SELECT, INSERT, UPDATE ON signal_features TO linewatch_writer;
