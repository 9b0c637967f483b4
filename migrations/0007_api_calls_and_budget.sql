-- DingTalk's monthly API quota: every call counted, the budget roomsync keeps to.
-- Tables and views only gain columns; every row is kept.

-- Every request sent to DingTalk, whatever its outcome, counted per quota month (YYYY-MM in
-- [budget] time_zone, DingTalk's Asia/Shanghai by default) and endpoint (the request's path).
-- Written with each run's records, failed and interrupted runs included.
CREATE TABLE api_calls (
    month    TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    calls    INTEGER NOT NULL,
    PRIMARY KEY (month, endpoint)
);

-- What kind of run a row is: 'rooms' (the room list) or, later, other kinds; the requests a
-- run sent to DingTalk (the cost the next run of its kind is estimated at).
ALTER TABLE sync_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'rooms';
ALTER TABLE sync_runs ADD COLUMN api_calls INTEGER NOT NULL DEFAULT 0;

-- Internal to roomsync: the budget as the latest run knew it (for `roomsync status` and the
-- view below, which read no configuration), and until when DingTalk said the organisation's
-- monthly quota is spent.
CREATE TABLE roomsync_budget (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    monthly_calls      INTEGER NOT NULL,   -- 0 = no limit
    time_zone          TEXT NOT NULL,      -- IANA name
    utc_offset_seconds INTEGER NOT NULL,   -- of time_zone, when last written
    schedule_cron      TEXT NOT NULL,
    exhausted_until    TEXT                -- RFC 3339 UTC; NULL unless the quota ran out
);

-- As before, and this month's calls with the budget.
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
                         AS monthly_budget
FROM (SELECT 1) AS one
LEFT JOIN (SELECT * FROM sync_runs ORDER BY run_id DESC LIMIT 1) AS latest
LEFT JOIN (SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1) AS success;
