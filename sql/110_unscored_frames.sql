-- Valid camera frames that no image model watches yet (a new SKU or camera waiting for
-- `linewatch train frames`). They used to be counted and forgotten; now each one leaves a row,
-- so a quality engineer sees what was not inspected, and garbage among them is dead-lettered
-- because they are decoded all the same. The image itself is not kept (it can be large and is
-- not needed to know that inspection was skipped).

CREATE TABLE IF NOT EXISTS unscored_frames (
    ts             timestamptz NOT NULL,  -- event time of the frame
    event_id       uuid        NOT NULL,  -- deterministic: UUIDv5 of (asset, camera, part, ts)
    asset_id       text        NOT NULL,
    camera         text        NOT NULL,
    sku            text        NOT NULL,
    part_id        text        NOT NULL,
    encoding       text        NOT NULL CHECK (encoding IN ('jpeg', 'png', 'raw')),
    width          integer     NOT NULL CHECK (width > 0),
    height         integer     NOT NULL CHECK (height > 0),
    channels       integer     NOT NULL CHECK (channels IN (1, 3)),
    payload_bytes  integer     NOT NULL CHECK (payload_bytes >= 0),
    reason         text        NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (ts, event_id)
);
CREATE INDEX IF NOT EXISTS unscored_frames_sku_camera_ts ON unscored_frames (sku, camera, ts DESC);
COMMENT ON TABLE unscored_frames IS
'Camera frames that were valid but not scored because no image model watches their SKU/camera yet.';

GRANT SELECT ON unscored_frames TO linewatch_reader;
GRANT SELECT, INSERT ON unscored_frames TO linewatch_writer;
