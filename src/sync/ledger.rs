//! The run's ledger of rooms: the fingerprints of the mirror's active rooms (loaded at the
//! start of the run) against what the listing brings. A fingerprint covers the room id, so a
//! record whose fingerprint is among them is a room identical to its active row: it is not
//! staged at all, which keeps a resync without upstream change close to the cost of fetching.
//! Only the rooms that are staged are tracked by id.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::Xxh3Builder;

use crate::dingtalk::Room;
use crate::store::fingerprints::MirrorSummary;
use crate::store::staging::StagedChange;

/// What to do with a fetched room record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New, changed or reappearing: stage it. `again` when an earlier record of this run was
    /// staged, which this one replaces. `change` is [`StagedChange::Added`] into an empty
    /// mirror, else [`StagedChange::Differs`].
    Stage { change: StagedChange, again: bool },
    /// Identical to the active row, not staged before in this run: nothing to do.
    Skip,
    /// Identical to the active row, but an earlier record of this run was staged: unstage it,
    /// since the later record wins.
    Unstage,
}

/// Fingerprints are XXH3 values, already uniform: a map keyed by them uses each as its own
/// hash instead of hashing it again.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only fingerprints (write_i64) are hashed; this keeps any other key well spread too.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

type ByFingerprint = BuildHasherDefault<FingerprintHasher>;

/// The rooms of one run: the mirror's active fingerprints, which of them the listing brought,
/// and the ids of the rooms staged.
pub struct Ledger {
    /// Fingerprints of the active rooms, and whether the listing brought each one unchanged.
    active: HashMap<i64, bool, ByFingerprint>,
    unchanged_seen: u64,
    /// Ids of the rooms staged so far in this run.
    staged: HashSet<String, Xxh3Builder>,
    empty_mirror: bool,
    /// Active rooms synced before fingerprints were kept: only found by id.
    unfingerprinted: bool,
}

impl Ledger {
    /// A ledger starting from the mirror as the run found it.
    pub fn new(mirror: MirrorSummary) -> Ledger {
        let unfingerprinted = mirror.active_rooms > mirror.fingerprints.len() as i64;
        let mut active =
            HashMap::with_capacity_and_hasher(mirror.fingerprints.len(), ByFingerprint::default());
        active.extend(mirror.fingerprints.into_iter().map(|fp| (fp, false)));
        Ledger {
            active,
            unchanged_seen: 0,
            staged: HashSet::with_hasher(Xxh3Builder::new()),
            empty_mirror: mirror.rooms == 0,
            unfingerprinted,
        }
    }

    /// Whether every active room can be found by fingerprint.
    pub fn all_fingerprinted(&self) -> bool {
        !self.unfingerprinted
    }

    /// Sorts one fetched record: skip, stage or unstage.
    pub fn observe(&mut self, room: &Room, fingerprint: i64) -> Decision {
        if let Some(seen) = self.active.get_mut(&fingerprint) {
            if !std::mem::replace(seen, true) {
                self.unchanged_seen += 1;
            }
            // Most runs stage nothing: no need to hash the id of every unchanged room.
            return if !self.staged.is_empty() && self.staged.remove(room.room_id.as_str()) {
                Decision::Unstage
            } else {
                Decision::Skip
            };
        }
        let again = !self.staged.insert(room.room_id.clone());
        let change = if self.empty_mirror {
            StagedChange::Added
        } else {
            StagedChange::Differs
        };
        Decision::Stage { change, again }
    }

    /// Ids of the staged rooms.
    pub fn staged(&self) -> impl Iterator<Item = &str> {
        self.staged.iter().map(String::as_str)
    }

    /// Whether a record of `room_id` is staged.
    pub fn is_staged(&self, room_id: &str) -> bool {
        self.staged.contains(room_id)
    }

    /// Whether `fingerprint` is an active room's that the listing brought unchanged.
    pub fn seen_unchanged(&self, fingerprint: i64) -> bool {
        self.active.get(&fingerprint).copied().unwrap_or(false)
    }

    /// Whether the listing brought any active room unchanged (none can, into an empty mirror).
    pub fn any_seen_unchanged(&self) -> bool {
        self.unchanged_seen > 0
    }

    /// Fingerprints of the active rooms the listing did not bring unchanged: each is a room that
    /// changed (and is staged) or that is gone.
    pub fn unseen(&self) -> Vec<i64> {
        self.active
            .iter()
            .filter(|(_, seen)| !**seen)
            .map(|(fp, _)| *fp)
            .collect()
    }

    /// Distinct rooms in the listing, given how many staged rooms also came unchanged in
    /// another record (`staged_and_unchanged`).
    pub fn seen(&self, staged_and_unchanged: u64) -> u64 {
        self.unchanged_seen + self.staged.len() as u64 - staged_and_unchanged
    }
}

/// A stable 64-bit fingerprint of what the mirror stores of a room: its fields, its group id
/// and its set of label ids (label and group names are kept in their own tables). XXH3 over a
/// length-prefixed encoding: a published algorithm, so stored fingerprints stay valid across
/// Rust and crate versions.
pub fn fingerprint(room: &Room) -> i64 {
    thread_local! {
        // The encoding buffer and the label ids, kept between calls: no allocation per room.
        static SCRATCH: RefCell<(Encoder, Vec<i64>)> =
            RefCell::new((Encoder(Vec::with_capacity(256)), Vec::new()));
    }
    SCRATCH.with_borrow_mut(|(buf, labels)| {
        buf.0.clear();
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
        labels.clear();
        labels.extend(room.labels.iter().map(|l| l.label_id));
        labels.sort_unstable();
        buf.0
            .extend_from_slice(&(labels.len() as u64).to_le_bytes());
        for id in labels.iter() {
            buf.0.extend_from_slice(&id.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&buf.0) as i64
    })
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
    fn fingerprint_values_are_stable() {
        // Stored fingerprints must stay valid across releases: a change here is a migration.
        assert_eq!(fingerprint(&room()), 6772898037197624645);
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
        let mirror = |fingerprints: Vec<i64>| MirrorSummary {
            rooms: fingerprints.len() as i64,
            active_rooms: fingerprints.len() as i64,
            fingerprints,
        };
        let mut ledger = Ledger::new(mirror(vec![fp, 1]));
        assert!(ledger.all_fingerprinted());
        let stage = |change, again| Decision::Stage { change, again };
        assert_eq!(ledger.observe(&r, fp), Decision::Skip);
        assert_eq!(
            ledger.observe(&r, fp + 1),
            stage(StagedChange::Differs, false)
        );
        assert_eq!(
            ledger.observe(&r, fp + 2),
            stage(StagedChange::Differs, true)
        );
        assert_eq!(ledger.observe(&r, fp), Decision::Unstage);
        assert!(!ledger.is_staged("r1"));
        let mut new = room();
        new.room_id = "new".into();
        assert_eq!(
            ledger.observe(&new, fp + 3),
            stage(StagedChange::Differs, false)
        );
        assert_eq!(ledger.unseen(), vec![1]);
        assert!(ledger.seen_unchanged(fp));
        assert_eq!(ledger.staged().collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(ledger.seen(0), 2);

        let mut empty = Ledger::new(mirror(Vec::new()));
        assert_eq!(empty.observe(&r, fp), stage(StagedChange::Added, false));
        assert_eq!(empty.seen(0), 1);
    }
}
