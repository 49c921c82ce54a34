-- Offsets a worker began processing and has not finished: what makes a poison message visible.
-- A worker records each batch's offset span (per topic partition) before it scores it and removes
-- the span in the transaction that stores the batch's rows. A span still here when a batch is
-- taken again means the worker processing it died (a crash in native code, the OOM killer, a
-- database or broker outage): the messages inside the unfinished span are then processed one at a
-- time, each recorded alone (alone = true), and a message that was being processed alone when a
-- worker died twice is dead-lettered instead of stopping the next worker too.

CREATE TABLE IF NOT EXISTS processing_attempts (
    topic            text        NOT NULL,
    "partition"      integer     NOT NULL,
    first_offset     bigint      NOT NULL,
    last_offset      bigint      NOT NULL CHECK (last_offset >= first_offset),
    alone            boolean     NOT NULL DEFAULT false,  -- one message processed on its own
    attempts         integer     NOT NULL CHECK (attempts > 0),
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", first_offset, last_offset, alone)
);
COMMENT ON TABLE processing_attempts IS
'Offset spans a worker began and did not finish; used to find and set aside a message that stops workers.';

GRANT SELECT ON processing_attempts TO linewatch_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON processing_attempts TO linewatch_writer;
