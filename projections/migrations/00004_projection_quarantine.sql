-- +goose Up
-- Events a projection could not store (a data exception, an integrity
-- violation, undecodable data). The runner writes a row in the same
-- transaction that moves the checkpoint past the event, so the projection
-- goes on; Reset empties this table with the projections, and a rebuild
-- quarantines the same events again. No event data is copied here: the
-- stream (and the audit trail) has it under the same sequence.
CREATE TABLE projection_quarantine (
    projection     text NOT NULL,
    seq            bigint NOT NULL,
    event_id       text NOT NULL,
    type           text NOT NULL,
    subject        text NOT NULL,
    sqlstate       text NOT NULL DEFAULT '',
    error          text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, seq)
);

-- +goose Down
DROP TABLE projection_quarantine;
