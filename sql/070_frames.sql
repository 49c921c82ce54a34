-- Heat-map summaries of scored camera frames: where the defect is, for the frames that alarmed
-- (or for every frame when the worker draws heat maps for all). The verdict itself is the
-- `scores` row with the same (ts, event_id) (modality 'frames'); this table says *where*, with
-- a small picture, so a dashboard or an engineer can show the region without the full frame.
-- Written by the frames agent in the same transaction as the frame's score.

CREATE TABLE IF NOT EXISTS frame_heatmaps (
    ts             timestamptz      NOT NULL,  -- event time of the frame
    event_id       uuid             NOT NULL,  -- deterministic: UUIDv5 of (asset, camera, part, ts)
    asset_id       text             NOT NULL,
    camera         text             NOT NULL,
    sku            text             NOT NULL,
    part_id        text             NOT NULL,
    detector       text             NOT NULL,
    model_version  text             NOT NULL,
    width          integer          NOT NULL CHECK (width > 0),
    height         integer          NOT NULL CHECK (height > 0),
    raw_score      double precision NOT NULL,
    peak_value     double precision NOT NULL,
    threshold      double precision NOT NULL CHECK (threshold > 0),
    peak_x         integer          NOT NULL,
    peak_y         integer          NOT NULL,
    box_x0         integer,
    box_y0         integer,
    box_x1         integer,
    box_y1         integer,
    area_fraction  double precision NOT NULL CHECK (area_fraction BETWEEN 0 AND 1),
    thumbnail      bytea            NOT NULL,
    written_at     timestamptz      NOT NULL DEFAULT clock_timestamp(),  -- when the row was written
    PRIMARY KEY (ts, event_id),
    CHECK ((box_x0 IS NULL) = (box_x1 IS NULL) AND (box_y0 IS NULL) = (box_y1 IS NULL))
);
CREATE INDEX IF NOT EXISTS frame_heatmaps_asset_camera_ts ON frame_heatmaps (asset_id, camera, ts DESC);
CREATE INDEX IF NOT EXISTS frame_heatmaps_sku_ts ON frame_heatmaps (sku, ts DESC);

COMMENT ON TABLE frame_heatmaps IS
'Where on a camera frame the image detector saw the anomaly: peak, hot-region box and a 32x32 heat-map thumbnail. '
'The verdict is the scores row with the same (ts, event_id) (modality = ''frames'').';
COMMENT ON COLUMN frame_heatmaps.width IS 'Width of the frame as the camera sent it; all coordinates are pixels of that frame.';
COMMENT ON COLUMN frame_heatmaps.raw_score IS 'The frame''s score: largest distance of any patch to its nearest normal patch.';
COMMENT ON COLUMN frame_heatmaps.peak_value IS 'Largest value of the smoothed heat map (at or a little below raw_score).';
COMMENT ON COLUMN frame_heatmaps.threshold IS 'The model''s alarm threshold in raw units (the scale of raw_score, peak_value and the thumbnail).';
COMMENT ON COLUMN frame_heatmaps.peak_x IS 'Column of the heat map''s peak (0 = left edge).';
COMMENT ON COLUMN frame_heatmaps.peak_y IS 'Row of the heat map''s peak (0 = top edge).';
COMMENT ON COLUMN frame_heatmaps.box_x0 IS
'Bounding box [box_x0, box_x1) x [box_y0, box_y1) of the connected region above threshold that holds the peak; '
'NULL when no pixel exceeds the threshold.';
COMMENT ON COLUMN frame_heatmaps.area_fraction IS 'Share of the frame''s heat map above threshold.';
COMMENT ON COLUMN frame_heatmaps.thumbnail IS
'8-bit grayscale PNG of the heat map (32x32 by default), scaled so 128 = threshold and 255 = twice the threshold.';

GRANT SELECT ON frame_heatmaps TO linewatch_reader;
GRANT SELECT, INSERT, UPDATE ON frame_heatmaps TO linewatch_writer;
