-- The contract other applications rely on (see README.md, "Schema").
-- Later migrations only add: never rename or drop anything created here.
-- Timestamps are RFC 3339 UTC text, e.g. 2026-11-25T16:31:04Z.

CREATE TABLE room_groups (
    group_id   INTEGER PRIMARY KEY,
    group_name TEXT,
    parent_id  INTEGER -- as DingTalk gives it; 0 = top level
);

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    corp_id        TEXT,
    room_staff_id  TEXT,
    room_name      TEXT,
    room_status    INTEGER, -- 0 visible to all, 1 admins only, 2 selected users
    room_capacity  INTEGER,
    location_title TEXT,
    location_desc  TEXT,
    room_picture   TEXT,
    isv_room_id    TEXT,
    group_id       INTEGER REFERENCES room_groups(group_id),
    first_seen_at  TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    removed_at     TEXT      -- set when the room left the listing; NULL while active
);
CREATE INDEX rooms_group_id ON rooms(group_id);

CREATE TABLE labels (
    label_id   INTEGER PRIMARY KEY, -- 1 TV, 2 Phone, 3 Projector, 4 Whiteboard, 5 Video Meeting, others custom
    label_name TEXT
);

CREATE TABLE room_labels (
    room_id  TEXT REFERENCES rooms,
    label_id INTEGER REFERENCES labels,
    PRIMARY KEY (room_id, label_id)
);
CREATE INDEX room_labels_label_id ON room_labels(label_id);

CREATE TABLE sync_runs (
    run_id        INTEGER PRIMARY KEY,
    trigger       TEXT NOT NULL, -- manual | schedule | startup
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL, -- running | succeeded | failed | interrupted
    pages_fetched INTEGER,
    rooms_seen    INTEGER,
    rooms_added   INTEGER,
    rooms_updated INTEGER,
    rooms_removed INTEGER,
    error         TEXT
);
CREATE INDEX sync_runs_status ON sync_runs(status, run_id);

CREATE TABLE sync_errors (
    error_id    INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES sync_runs,
    occurred_at TEXT NOT NULL,
    stage       TEXT NOT NULL, -- auth | fetch | validate | store
    page        INTEGER,       -- 0-based page of the room list, where it applies
    http_status INTEGER,
    error_code  TEXT,          -- DingTalk's code, or roomsync's own such as removal.guard
    message     TEXT,
    request_id  TEXT,
    retried     INTEGER NOT NULL -- 1 when the request was tried again
);
CREATE INDEX sync_errors_run_id ON sync_errors(run_id);
