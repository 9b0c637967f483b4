-- Room availability: every active room's busy times, refreshed on a schedule of their own
-- (runs of kind 'availability'), so that displays and booking bots can ask "free now? free
-- until?". Tables and views only gain columns; every row is kept.

-- The busy items of each room as DingTalk gave them in the last good answer: their own times
-- (not clipped to the window), RFC 3339 UTC with seconds and Z.
CREATE TABLE room_busy (
    room_id      TEXT NOT NULL REFERENCES rooms(room_id),
    start_at     TEXT NOT NULL,
    end_at       TEXT NOT NULL,
    event_id     TEXT,
    status       TEXT,   -- as DingTalk gives it, e.g. BUSY or TENTATIVE
    organizer_id TEXT,   -- the organizer's unionId
    time_zone    TEXT    -- the start's timeZone as sent
);
CREATE INDEX room_busy_room_start ON room_busy(room_id, start_at);

-- The last refresh of each room: the window asked for, when the last good answer came, and
-- the last error (NULL when the last answer was good: the room's busy rows are current).
CREATE TABLE room_schedule_checks (
    room_id         TEXT PRIMARY KEY REFERENCES rooms(room_id),
    window_start_at TEXT NOT NULL,
    window_end_at   TEXT NOT NULL,
    checked_at      TEXT,     -- NULL if never answered without an error
    error           TEXT,
    run_id          INTEGER NOT NULL REFERENCES sync_runs(run_id)
);

-- The room list's runs as before (runs of kind 'rooms' only), and the last successful
-- availability refresh.
DROP VIEW sync_status;
CREATE VIEW sync_status AS
SELECT
    latest.run_id        AS latest_run_id,
    latest.trigger       AS latest_trigger,
    latest.status        AS latest_status,
    latest.started_at    AS latest_started_at,
    latest.finished_at   AS latest_finished_at,
    latest.error         AS latest_error,
    success.run_id       AS last_success_run_id,
    success.finished_at  AS last_success_at,
    CAST(strftime('%s', 'now') - strftime('%s', success.finished_at) AS INTEGER)
                         AS seconds_since_success,
    (SELECT COALESCE(SUM(c.calls), 0) FROM api_calls AS c
     WHERE c.month = strftime('%Y-%m', 'now',
               (SELECT b.utc_offset_seconds FROM roomsync_budget AS b) || ' seconds'))
                         AS calls_this_month,
    (SELECT b.monthly_calls FROM roomsync_budget AS b)
                         AS monthly_budget,
    availability.finished_at
                         AS last_availability_at,
    CAST(strftime('%s', 'now') - strftime('%s', availability.finished_at) AS INTEGER)
                         AS seconds_since_availability
FROM (SELECT 1) AS one
LEFT JOIN (SELECT * FROM sync_runs WHERE kind = 'rooms' ORDER BY run_id DESC LIMIT 1) AS latest
LEFT JOIN (SELECT * FROM sync_runs WHERE kind = 'rooms' AND status = 'succeeded'
           ORDER BY run_id DESC LIMIT 1) AS success
LEFT JOIN (SELECT * FROM sync_runs WHERE kind = 'availability' AND status = 'succeeded'
           ORDER BY run_id DESC LIMIT 1) AS availability;

-- One row per active room: is it busy now, until when, and when is it free until. Unknown
-- (NULL) when the room was never checked or its window has ended. Back-to-back and
-- overlapping items merge into one busy stretch.
CREATE VIEW room_availability AS
WITH RECURSIVE
    clock (now) AS (SELECT strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    -- The busy stretch that covers now, grown by every item that starts within it.
    stretch (room_id, end_at) AS (
        SELECT b.room_id, MAX(b.end_at) FROM room_busy AS b, clock
        WHERE b.start_at <= clock.now AND b.end_at > clock.now
        GROUP BY b.room_id
        UNION
        SELECT s.room_id, b.end_at FROM stretch AS s
        JOIN room_busy AS b ON b.room_id = s.room_id
        WHERE b.start_at <= s.end_at AND b.end_at > s.end_at
    ),
    known (room_id, room_name, group_path, checked_at, window_end_at, error, busy_now, busy_until) AS (
        SELECT r.room_id, r.room_name, r.group_path, c.checked_at, c.window_end_at, c.error,
               CASE WHEN c.checked_at IS NULL OR c.window_end_at <= clock.now THEN NULL
                    WHEN EXISTS (SELECT 1 FROM stretch AS s WHERE s.room_id = r.room_id) THEN 1
                    ELSE 0 END,
               (SELECT MAX(s.end_at) FROM stretch AS s WHERE s.room_id = r.room_id)
        FROM active_rooms AS r
        CROSS JOIN clock
        LEFT JOIN room_schedule_checks AS c ON c.room_id = r.room_id
    ),
    nexts (room_id, next_busy_at) AS (
        SELECT k.room_id,
               CASE WHEN k.busy_now IS NULL THEN NULL ELSE
                   (SELECT MIN(b.start_at) FROM room_busy AS b
                    WHERE b.room_id = k.room_id AND b.start_at > clock.now
                      AND (k.busy_until IS NULL OR b.start_at > k.busy_until)) END
        FROM known AS k CROSS JOIN clock
    )
SELECT k.room_id, k.room_name, k.group_path, k.checked_at, k.busy_now,
       CASE WHEN k.busy_now = 1 THEN k.busy_until END AS busy_until,
       n.next_busy_at,
       CASE WHEN k.busy_now = 0 THEN COALESCE(n.next_busy_at, k.window_end_at) END AS free_until,
       k.error
FROM known AS k
JOIN nexts AS n ON n.room_id = k.room_id;
