-- Internal to roomsync, not part of the contract applications rely on.
-- A fingerprint of each room as last synced (its fields, group id and label ids), so that a
-- resync can tell unchanged rooms apart while fetching and need not stage them.
CREATE TABLE roomsync_room_fingerprints (
    room_id     TEXT PRIMARY KEY,
    fingerprint INTEGER NOT NULL
) WITHOUT ROWID;
