-- Groups gone upstream are kept and marked, like rooms.
ALTER TABLE room_groups ADD COLUMN removed_at TEXT;

-- The change feed: one row per room change, written in the same transaction as the change.
-- Poll with `WHERE change_id > ?`: ids only grow (AUTOINCREMENT: never reused, even after
-- pruning), and a change is visible exactly when the data it describes is.
CREATE TABLE room_changes (
    change_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         INTEGER NOT NULL REFERENCES sync_runs,
    room_id        TEXT NOT NULL,
    change         TEXT NOT NULL,  -- added | updated | removed | restored
    changed_at     TEXT NOT NULL,
    changed_fields TEXT            -- JSON array of column names, for updated (and "labels")
);
CREATE INDEX room_changes_room_id ON room_changes(room_id);
-- No index on changed_at: change_id grows with changed_at, so pruning goes by change_id.
