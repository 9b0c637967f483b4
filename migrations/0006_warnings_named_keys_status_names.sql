-- Warnings, foreign keys that name their columns, and names for the room status codes.
-- Tables and views only gain columns; every row is kept.

-- A run's warnings: parts of records left out while the run went on (rows in sync_errors with
-- severity 'warning'; this count is exact, the rows stop at 100 per run).
ALTER TABLE sync_runs ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;

-- room_labels, sync_errors and room_changes name the columns their foreign keys refer to, as
-- tools that read PRAGMA foreign_key_list (Datasette, for one) expect. SQLite cannot change a
-- constraint in place: each table is rebuilt with every row. active_rooms reads room_labels,
-- so it is dropped first and made again below (with one more column).
DROP VIEW active_rooms;

CREATE TABLE room_labels_rebuilt (
    room_id  TEXT REFERENCES rooms(room_id),
    label_id INTEGER REFERENCES labels(label_id),
    PRIMARY KEY (room_id, label_id)
);
INSERT INTO room_labels_rebuilt (room_id, label_id) SELECT room_id, label_id FROM room_labels;
DROP TABLE room_labels;
ALTER TABLE room_labels_rebuilt RENAME TO room_labels;
CREATE INDEX room_labels_label_id ON room_labels(label_id);

CREATE TABLE sync_errors_rebuilt (
    error_id    INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES sync_runs(run_id),
    occurred_at TEXT NOT NULL,
    stage       TEXT NOT NULL, -- auth | fetch | validate | store | internal
    page        INTEGER,       -- 0-based page of the room list, where it applies
    http_status INTEGER,
    error_code  TEXT,          -- DingTalk's code, or roomsync's own such as removal.guard
    message     TEXT,
    request_id  TEXT,
    retried     INTEGER NOT NULL, -- 1 when the request was tried again
    severity    TEXT NOT NULL DEFAULT 'error' -- error | warning (a part left out, the run went on)
);
INSERT INTO sync_errors_rebuilt
    (error_id, run_id, occurred_at, stage, page, http_status, error_code, message, request_id, retried)
SELECT error_id, run_id, occurred_at, stage, page, http_status, error_code, message, request_id, retried
FROM sync_errors;
DROP TABLE sync_errors;
ALTER TABLE sync_errors_rebuilt RENAME TO sync_errors;
CREATE INDEX sync_errors_run_id ON sync_errors(run_id);

CREATE TABLE room_changes_rebuilt (
    change_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         INTEGER NOT NULL REFERENCES sync_runs(run_id),
    room_id        TEXT NOT NULL,
    change         TEXT NOT NULL,  -- added | updated | removed | restored
    changed_at     TEXT NOT NULL,
    changed_fields TEXT            -- JSON array of column names, for updated (and "labels")
);
INSERT INTO room_changes_rebuilt (change_id, run_id, room_id, change, changed_at, changed_fields)
SELECT change_id, run_id, room_id, change, changed_at, changed_fields FROM room_changes;
-- Change ids are never reused: the sequence, above the largest id once the feed was pruned,
-- carries over (the rename below moves this row of sqlite_sequence with the table).
DELETE FROM sqlite_sequence WHERE name = 'room_changes_rebuilt';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'room_changes_rebuilt',
       MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'room_changes'), 0),
           COALESCE((SELECT MAX(change_id) FROM room_changes), 0));
DROP TABLE room_changes;
ALTER TABLE room_changes_rebuilt RENAME TO room_changes;
CREATE INDEX room_changes_room_id ON room_changes(room_id);

-- What DingTalk's room status codes mean.
CREATE TABLE room_status_names (
    room_status INTEGER PRIMARY KEY,
    name        TEXT NOT NULL
);
INSERT INTO room_status_names (room_status, name) VALUES
    (0, 'visible to all members'),
    (1, 'visible to admins only'),
    (2, 'visible to selected users');

-- Active rooms with their group and labels, as before, and the name of their status.
CREATE VIEW active_rooms AS
SELECT r.room_id, r.corp_id, r.room_staff_id, r.room_name, r.room_status, r.room_capacity,
       r.location_title, r.location_desc, r.room_picture, r.isv_room_id, r.group_id,
       g.group_name,
       t.path AS group_path,
       (SELECT json_group_array(label_name) FROM (
            SELECT l.label_name FROM room_labels AS rl JOIN labels AS l ON l.label_id = rl.label_id
            WHERE rl.room_id = r.room_id ORDER BY rl.label_id)) AS label_names,
       (SELECT json_group_array(label_id) FROM (
            SELECT rl.label_id FROM room_labels AS rl
            WHERE rl.room_id = r.room_id ORDER BY rl.label_id)) AS label_ids,
       r.first_seen_at, r.updated_at,
       (SELECT s.name FROM room_status_names AS s WHERE s.room_status = r.room_status)
           AS room_status_name
FROM rooms AS r
LEFT JOIN room_groups AS g ON g.group_id = r.group_id
LEFT JOIN room_group_tree AS t ON t.group_id = r.group_id
WHERE r.removed_at IS NULL;
