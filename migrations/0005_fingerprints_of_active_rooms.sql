-- Internal to roomsync. roomsync_room_fingerprints now holds the fingerprints of the active
-- rooms only: a room's row goes when the room is removed and comes back when it is restored,
-- so the start of a run reads the table alone instead of joining it with rooms.
DELETE FROM roomsync_room_fingerprints
WHERE room_id NOT IN (SELECT room_id FROM rooms WHERE removed_at IS NULL);
