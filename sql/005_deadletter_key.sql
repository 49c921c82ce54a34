-- A dead letter's natural key includes a digest of its bytes: offsets restart when a topic is
-- recreated (and always with the in-memory embedded broker), and a different message at a
-- reused offset must not be dropped as a duplicate. A redelivered message (same offset, same
-- bytes) still lands once.
ALTER TABLE deadletters
    ADD COLUMN IF NOT EXISTS payload_md5 text GENERATED ALWAYS AS (md5(payload)) STORED;
ALTER TABLE deadletters DROP CONSTRAINT IF EXISTS deadletters_pkey;
ALTER TABLE deadletters ADD CONSTRAINT deadletters_pkey PRIMARY KEY (source_topic, partition, "offset", payload_md5);
