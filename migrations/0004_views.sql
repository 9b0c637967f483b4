-- Views for the applications that read the mirror. Like tables, they only gain columns.

-- Every group with its depth (0 = top level) and path from the top, e.g.
-- "Campus 1 / Building 7". A group whose parent is unknown counts as top level; a cycle in
-- the parent links is cut where it closes.
CREATE VIEW room_group_tree AS
WITH RECURSIVE tree (group_id, group_name, parent_id, removed_at, depth, path, trail) AS (
    SELECT g.group_id, g.group_name, g.parent_id, g.removed_at, 0,
           COALESCE(g.group_name, ''), '/' || g.group_id || '/'
    FROM room_groups AS g
    WHERE g.parent_id IS NULL OR g.parent_id = 0
       OR g.parent_id NOT IN (SELECT group_id FROM room_groups)
    UNION ALL
    SELECT c.group_id, c.group_name, c.parent_id, c.removed_at, t.depth + 1,
           t.path || ' / ' || COALESCE(c.group_name, ''), t.trail || c.group_id || '/'
    FROM room_groups AS c
    JOIN tree AS t ON c.parent_id = t.group_id
    WHERE instr(t.trail, '/' || c.group_id || '/') = 0
)
SELECT group_id, group_name, parent_id, depth, path, removed_at FROM tree;

-- Active rooms with their group and labels.
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
       r.first_seen_at, r.updated_at
FROM rooms AS r
LEFT JOIN room_groups AS g ON g.group_id = r.group_id
LEFT JOIN room_group_tree AS t ON t.group_id = r.group_id
WHERE r.removed_at IS NULL;

-- One row: the latest run, the latest successful run, and the seconds since that success.
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
                         AS seconds_since_success
FROM (SELECT 1) AS one
LEFT JOIN (SELECT * FROM sync_runs ORDER BY run_id DESC LIMIT 1) AS latest
LEFT JOIN (SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1) AS success;
