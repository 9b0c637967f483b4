//! The run's ledger of rooms: what the mirror holds (loaded at the start of the run) against what
//! the listing brings. A room whose fingerprint matches its active row is not staged at all,
//! which keeps a resync without upstream change close to the cost of fetching.

use std::collections::HashMap;

use xxhash_rust::xxh3::Xxh3Builder;

use crate::dingtalk::Room;
use crate::store::fingerprints::KnownRoom;

/// What the mirror holds of a room that is to be staged, as far as the ledger knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not in the mirror.
    Added,
    /// In the mirror, removed.
    Restored,
    /// Active with another fingerprint (or none): the apply compares the values.
    Candidate,
}

impl Change {
    /// The value staged in `stage_rooms.change`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Restored => "restored",
            Change::Candidate => "candidate",
        }
    }
}

/// What to do with a fetched room record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New, changed or reappearing: stage it. `again` when an earlier record of this run was
    /// staged, which this one replaces.
    Stage { change: Change, again: bool },
    /// Identical to the active row, not staged before in this run: nothing to do.
    Skip,
    /// Identical to the active row, but an earlier record of this run was staged: unstage it,
    /// since the later record wins.
    Unstage,
}

#[derive(Debug)]
struct Entry {
    known: Option<KnownRoom>,
    seen: bool,
    staged: bool,
}

pub struct Ledger {
    /// Keyed with XXH3 rather than SipHash: the keys come from the organisation's own
    /// listing, and hashing is a good part of the per-room cost of a resync.
    rooms: HashMap<String, Entry, Xxh3Builder>,
}

impl Ledger {
    pub fn new(known: HashMap<String, KnownRoom>) -> Ledger {
        let rooms = known
            .into_iter()
            .map(|(id, k)| {
                (
                    id,
                    Entry {
                        known: Some(k),
                        seen: false,
                        staged: false,
                    },
                )
            })
            .collect();
        Ledger { rooms }
    }

    pub fn observe(&mut self, room: &Room, fingerprint: i64) -> Decision {
        let entry = match self.rooms.get_mut(room.room_id.as_str()) {
            Some(e) => e,
            None => self.rooms.entry(room.room_id.clone()).or_insert(Entry {
                known: None,
                seen: false,
                staged: false,
            }),
        };
        entry.seen = true;
        let change = match &entry.known {
            None => Change::Added,
            Some(k) if !k.active => Change::Restored,
            Some(k) if k.fingerprint == Some(fingerprint) => {
                let was_staged = std::mem::replace(&mut entry.staged, false);
                return if was_staged {
                    Decision::Unstage
                } else {
                    Decision::Skip
                };
            }
            Some(_) => Change::Candidate,
        };
        let again = std::mem::replace(&mut entry.staged, true);
        Decision::Stage { change, again }
    }

    /// Distinct rooms in the listing so far.
    pub fn seen(&self) -> u64 {
        self.rooms.values().filter(|e| e.seen).count() as u64
    }

    /// Active rooms of the mirror that the listing did not bring.
    pub fn missing(&self) -> Vec<&str> {
        self.rooms
            .iter()
            .filter(|(_, e)| !e.seen && e.known.as_ref().is_some_and(|k| k.active))
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// A stable 64-bit fingerprint of what the mirror stores of a room: its fields, its group id
/// and its set of label ids (label and group names are kept in their own tables). XXH3 over a
/// length-prefixed encoding: a published algorithm, so stored fingerprints stay valid across
/// Rust and crate versions.
pub fn fingerprint(room: &Room) -> i64 {
    let mut buf = Encoder(Vec::with_capacity(256));
    buf.text(Some(&room.room_id));
    for field in [
        &room.corp_id,
        &room.room_staff_id,
        &room.room_name,
        &room.location_title,
        &room.location_desc,
        &room.room_picture,
        &room.isv_room_id,
    ] {
        buf.text(field.as_deref());
    }
    buf.int(room.room_status);
    buf.int(room.room_capacity);
    buf.int(room.group.as_ref().map(|g| g.group_id));
    let mut labels: Vec<i64> = room.labels.iter().map(|l| l.label_id).collect();
    labels.sort_unstable();
    buf.0
        .extend_from_slice(&(labels.len() as u64).to_le_bytes());
    for id in labels {
        buf.0.extend_from_slice(&id.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&buf.0) as i64
}

/// The canonical encoding: every value tagged present or absent, text length-prefixed.
struct Encoder(Vec<u8>);

impl Encoder {
    fn text(&mut self, value: Option<&str>) {
        match value {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn int(&mut self, value: Option<i64>) {
        match value {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(1);
                self.0.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::{Group, Label};

    fn room() -> Room {
        Room {
            room_id: "r1".into(),
            corp_id: Some("corp".into()),
            room_staff_id: None,
            room_name: Some("Room".into()),
            room_status: Some(0),
            room_capacity: Some(8),
            location_title: Some("HQ".into()),
            location_desc: None,
            room_picture: None,
            isv_room_id: None,
            group: Some(Group {
                group_id: 4,
                group_name: Some("G".into()),
                parent_id: Some(0),
            }),
            labels: vec![
                Label {
                    label_id: 1,
                    label_name: Some("TV".into()),
                },
                Label {
                    label_id: 3,
                    label_name: None,
                },
            ],
        }
    }

    #[test]
    fn fingerprints_see_fields_groups_and_label_sets_but_not_names_of_labels_or_groups() {
        let base = fingerprint(&room());
        assert_eq!(base, fingerprint(&room()));
        let mut r = room();
        r.labels.reverse();
        r.labels[0].label_name = Some("renamed".into());
        r.group.as_mut().unwrap().group_name = Some("renamed".into());
        assert_eq!(
            fingerprint(&r),
            base,
            "label order and names, group names do not count"
        );
        let changes: [fn(&mut Room); 5] = [
            |r| r.room_name = Some("Other".into()),
            |r| r.room_capacity = None,
            |r| r.group.as_mut().unwrap().group_id = 5,
            |r| r.labels.pop().map(|_| ()).unwrap(),
            // A value moved from one field to its neighbour is a change too.
            |r| {
                r.location_desc = r.location_title.take();
            },
        ];
        for change in changes {
            let mut r = room();
            change(&mut r);
            assert_ne!(fingerprint(&r), base, "{r:?}");
        }
    }

    #[test]
    fn the_ledger_skips_unchanged_active_rooms_and_lets_the_later_record_win() {
        let r = room();
        let fp = fingerprint(&r);
        let known = HashMap::from([
            (
                "r1".to_string(),
                KnownRoom {
                    fingerprint: Some(fp),
                    active: true,
                },
            ),
            (
                "gone".to_string(),
                KnownRoom {
                    fingerprint: Some(1),
                    active: true,
                },
            ),
            (
                "removed".to_string(),
                KnownRoom {
                    fingerprint: Some(fp),
                    active: false,
                },
            ),
        ]);
        let mut ledger = Ledger::new(known);
        let stage = |change, again| Decision::Stage { change, again };
        assert_eq!(ledger.observe(&r, fp), Decision::Skip);
        assert_eq!(ledger.observe(&r, fp + 1), stage(Change::Candidate, false));
        assert_eq!(ledger.observe(&r, fp + 2), stage(Change::Candidate, true));
        assert_eq!(ledger.observe(&r, fp), Decision::Unstage);
        let mut back = room();
        back.room_id = "removed".into();
        let reappearing = ledger.observe(&back, fp);
        assert_eq!(reappearing, stage(Change::Restored, false), "always staged");
        let mut new = room();
        new.room_id = "new".into();
        assert_eq!(ledger.observe(&new, fp), stage(Change::Added, false));
        assert_eq!(ledger.observe(&new, fp), stage(Change::Added, true));
        assert_eq!(ledger.seen(), 3);
        assert_eq!(ledger.missing(), vec!["gone"]);
    }
}
