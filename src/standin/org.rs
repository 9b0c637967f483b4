//! A generated organisation, computed on demand from (seed, size, revision): room `i` is the
//! same every time it is asked for, so the stand-in holds no per-room state and serves 100,000
//! rooms in constant memory.

use serde::Serialize;

/// The five labels DingTalk defines, then the organisation's own.
pub const STANDARD_LABELS: [(i64, &str); 5] = [
    (1, "TV"),
    (2, "Phone"),
    (3, "Projector"),
    (4, "Whiteboard"),
    (5, "Video Meeting"),
];
pub const CUSTOM_LABELS: [(i64, &str); 4] = [
    (101, "Ceiling mic"),
    (102, "可视会议 (视频)"),
    (103, "Wheelchair \"accessible\""),
    (104, "Café nearby"),
];

const NAMES: [&str; 8] = [
    "Meeting room",
    "会议室",
    "Salle «Étoile»",
    "Sala Ñandú",
    "Raum Größe",
    "O'Brien's \"Den\"",
    "Конференц-зал",
    "Huddle",
];

/// Describes a generated organisation. Revision 0 is the original; in revision `r > 0` every
/// `change_every`-th room (offset by `r`) differs in its name, capacity and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgSpec {
    pub seed: u64,
    pub rooms: usize,
    pub revision: u32,
    /// 20 changes 5% of the rooms per revision.
    pub change_every: usize,
}

impl OrgSpec {
    pub fn new(seed: u64, rooms: usize) -> OrgSpec {
        OrgSpec {
            seed,
            rooms,
            revision: 0,
            change_every: 20,
        }
    }

    /// Leaf groups (floors) that hold rooms: about 25 rooms each.
    fn floors(&self) -> usize {
        (self.rooms / 25).max(1)
    }

    fn buildings(&self) -> usize {
        self.floors().div_ceil(5)
    }

    fn campuses(&self) -> usize {
        self.buildings().div_ceil(4)
    }

    /// Whether room `i` differs from revision 0 in this revision.
    pub fn is_changed(&self, i: usize) -> bool {
        self.revision > 0 && (i + self.revision as usize).is_multiple_of(self.change_every)
    }

    /// Every group: campuses (top level), buildings, floors, and two groups without rooms.
    pub fn groups(&self) -> Vec<GroupJson> {
        let mut groups = Vec::new();
        for c in 0..self.campuses() {
            groups.push(GroupJson {
                group_id: campus_id(c),
                group_name: format!("Campus {}", c + 1),
                parent_id: 0,
            });
        }
        for b in 0..self.buildings() {
            groups.push(GroupJson {
                group_id: building_id(b),
                group_name: format!("Building {} «{}»", b + 1, NAMES[b % NAMES.len()]),
                parent_id: campus_id(b / 4),
            });
        }
        for f in 0..self.floors() {
            groups.push(GroupJson {
                group_id: floor_id(f),
                group_name: format!("Floor {}", f % 5 + 1),
                parent_id: building_id(f / 5),
            });
        }
        groups.push(GroupJson {
            group_id: 900_001,
            group_name: "Annex (planned)".into(),
            parent_id: campus_id(0),
        });
        groups.push(GroupJson {
            group_id: 900_002,
            group_name: "Closed wing".into(),
            parent_id: 900_001,
        });
        groups
    }

    /// Room `i` (0-based) as DingTalk would send it.
    pub fn room(&self, i: usize) -> RoomJson {
        let mut rng =
            fastrand::Rng::with_seed(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
        let changed = self.is_changed(i);
        let floor = rng.usize(..self.floors());
        let building = floor / 5;
        let mut name = format!(
            "{} {}-{:02}",
            NAMES[rng.usize(..NAMES.len())],
            building + 1,
            i % 100
        );
        let mut capacity = [2, 4, 6, 8, 10, 12, 16, 20, 30, 40][rng.usize(..10)];
        let mut labels: Vec<LabelJson> = STANDARD_LABELS
            .iter()
            .filter(|_| rng.bool())
            .map(|(id, name)| LabelJson {
                label_id: *id,
                label_name: (*name).into(),
            })
            .collect();
        if rng.u8(..10) == 0 {
            let (id, name) = CUSTOM_LABELS[rng.usize(..CUSTOM_LABELS.len())];
            labels.push(LabelJson {
                label_id: id,
                label_name: name.into(),
            });
        }
        if changed {
            name.push_str(&format!(" (rev {})", self.revision));
            capacity += 2;
            labels.retain(|l| l.label_id != 2);
            labels.push(LabelJson {
                label_id: 2,
                label_name: "Phone".into(),
            });
        }
        RoomJson {
            room_id: format!("room-{:06}", i),
            room_staff_id: (rng.u8(..4) == 0)
                .then(|| format!("0{:011}", rng.u64(..100_000_000_000))),
            corp_id: format!("dingstandin{:x}", self.seed),
            room_name: name,
            room_status: [0, 0, 0, 1, 2][rng.usize(..5)],
            room_labels: labels,
            room_capacity: capacity,
            room_location: (rng.u8(..10) != 0).then(|| LocationJson {
                title: format!("Building {}", building + 1),
                desc: (rng.bool()).then(|| {
                    format!(
                        "Floor {}, {} wing",
                        floor % 5 + 1,
                        ["east", "west", "north"][i % 3]
                    )
                }),
            }),
            room_picture: rng
                .bool()
                .then(|| format!("https://static.example.invalid/rooms/{i}.jpg")),
            isv_room_id: (rng.u8(..3) == 0).then(|| format!("isv-{i}")),
            room_group: GroupJson {
                group_id: floor_id(floor),
                group_name: format!("Floor {}", floor % 5 + 1),
                parent_id: building_id(building),
            },
        }
    }
}

fn campus_id(c: usize) -> i64 {
    1 + c as i64
}

fn building_id(b: usize) -> i64 {
    1_000 + b as i64
}

fn floor_id(f: usize) -> i64 {
    100_000 + f as i64
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomJson {
    pub room_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_staff_id: Option<String>,
    pub corp_id: String,
    pub room_name: String,
    pub room_status: i64,
    pub room_labels: Vec<LabelJson>,
    pub room_capacity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_location: Option<LocationJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_picture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isv_room_id: Option<String>,
    pub room_group: GroupJson,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelJson {
    pub label_id: i64,
    pub label_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocationJson {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupJson {
    pub group_id: i64,
    pub group_name: String,
    pub parent_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_gives_the_same_rooms() {
        let a = OrgSpec::new(7, 1000);
        let json = |spec: OrgSpec, i| serde_json::to_string(&spec.room(i)).unwrap();
        assert_eq!(json(a, 5), json(a, 5));
        assert_ne!(json(a, 5), json(OrgSpec::new(8, 1000), 5));
    }

    #[test]
    fn a_revision_changes_one_room_in_twenty() {
        let base = OrgSpec::new(1, 10_000);
        let next = OrgSpec {
            revision: 1,
            ..base
        };
        let changed = (0..base.rooms)
            .filter(|&i| {
                serde_json::to_string(&base.room(i)).unwrap()
                    != serde_json::to_string(&next.room(i)).unwrap()
            })
            .count();
        assert_eq!(changed, 500);
    }

    #[test]
    fn every_room_group_is_listed_with_its_parents() {
        let spec = OrgSpec::new(3, 2_000);
        let groups = spec.groups();
        let ids: std::collections::HashSet<i64> = groups.iter().map(|g| g.group_id).collect();
        for g in &groups {
            assert!(g.parent_id == 0 || ids.contains(&g.parent_id), "{g:?}");
        }
        for i in 0..spec.rooms {
            assert!(ids.contains(&spec.room(i).room_group.group_id));
        }
    }
}
