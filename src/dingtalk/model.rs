//! What DingTalk sends, and the validated records the store works with.
//!
//! Field types follow the official SDK models (see `../shared/api/dingtalk-notes.md`): every
//! field is optional and may be null; unknown fields are ignored; a wrong type is an error.
//! A part the mirror cannot use (a label without `labelId`, a group without `groupId`, a null
//! record) is left out and reported as a [`SkippedPart`]; only a room without `roomId` makes
//! the record, and so the run, fail.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One page of `GET /v1.0/rooms/meetingRoomLists`, as sent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomListPage {
    #[serde(default)]
    pub has_more: Option<bool>,
    #[serde(default)]
    pub next_token: Option<i64>,
    /// Null items are read as such, to be left out with a warning.
    #[serde(default)]
    pub result: Option<Vec<Option<RawRoom>>>,
}

/// A room record as sent; [`RawRoom::validate`] makes a [`Room`] of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRoom {
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    room_staff_id: Option<String>,
    #[serde(default)]
    corp_id: Option<String>,
    #[serde(default)]
    room_name: Option<String>,
    #[serde(default)]
    room_status: Option<i64>,
    #[serde(default)]
    room_labels: Option<Vec<Option<RawLabel>>>,
    #[serde(default)]
    room_capacity: Option<i64>,
    #[serde(default)]
    room_location: Option<RawLocation>,
    #[serde(default)]
    room_picture: Option<String>,
    #[serde(default)]
    isv_room_id: Option<String>,
    #[serde(default)]
    room_group: Option<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLabel {
    #[serde(default)]
    label_id: Option<i64>,
    #[serde(default)]
    label_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawLocation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    desc: Option<String>,
}

/// A room group as it appears in a room record and in `groupLists`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawGroup {
    #[serde(default)]
    group_id: Option<i64>,
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    parent_id: Option<i64>,
}

/// The body of `GET /v1.0/rooms/groupLists`.
#[derive(Debug, Deserialize)]
pub struct GroupListResponse {
    #[serde(default)]
    pub result: Option<Vec<Option<RawGroup>>>,
}

/// The body of `POST /v1.0/oauth2/accessToken`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: Option<String>,
    pub expire_in: Option<i64>,
}

/// A validated room, ready to be staged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    pub room_id: String,
    pub corp_id: Option<String>,
    pub room_staff_id: Option<String>,
    pub room_name: Option<String>,
    pub room_status: Option<i64>,
    pub room_capacity: Option<i64>,
    pub location_title: Option<String>,
    pub location_desc: Option<String>,
    pub room_picture: Option<String>,
    pub isv_room_id: Option<String>,
    pub group: Option<Group>,
    /// Distinct by `label_id`, in the order DingTalk sent them.
    pub labels: Vec<Label>,
}

impl Room {
    /// About the memory the room holds: its texts and its own size. What bounds the rooms a
    /// run keeps in hand at once, whatever the upstream puts in a record.
    pub fn approx_bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        let labels: usize = self
            .labels
            .iter()
            .map(|l| std::mem::size_of::<Label>() + text(&l.label_name))
            .sum();
        std::mem::size_of::<Room>()
            + self.room_id.len()
            + [
                &self.corp_id,
                &self.room_staff_id,
                &self.room_name,
                &self.location_title,
                &self.location_desc,
                &self.room_picture,
                &self.isv_room_id,
            ]
            .into_iter()
            .map(text)
            .sum::<usize>()
            + self.group.as_ref().map_or(0, |g| text(&g.group_name))
            + labels
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub group_id: i64,
    pub group_name: Option<String>,
    pub parent_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub label_id: i64,
    pub label_name: Option<String>,
}

/// A body that is not the documented JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all, or cut off.
    #[error("{reason}")]
    Malformed { reason: String },
    /// A field of the wrong type (e.g. `result[3].roomCapacity`).
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
}

/// A record the mirror cannot use at all; `index` is the record's place on its page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("result[{index}]: room without roomId")]
    NoRoomId { index: usize },
}

/// A part of a response that could not be used and was left out, the run going on: a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPart {
    /// Where in the response, e.g. `result[3].roomLabels[1]` (indexes from 0 on the page).
    pub path: String,
    /// What was left out, e.g. `label without labelId`.
    pub what: &'static str,
    /// The room it belongs to, when it is a part of a room.
    pub room_id: Option<String>,
}

impl std::fmt::Display for SkippedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} left out", self.path, self.what)?;
        if let Some(id) = &self.room_id {
            write!(f, " (roomId {id:?})")?;
        }
        Ok(())
    }
}

/// Parses a JSON body, naming the path of the offending field on error
/// (e.g. `result[3].roomCapacity: invalid type: string "ten", expected i64`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    // Path tracking makes a parse 2.4x slower, and a page's parse is on the path from one
    // cursor request to the next: track it only to explain a body that failed.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        if path == "." {
            ParseError::Malformed { reason }
        } else {
            ParseError::Field { path, reason }
        }
    })
}

impl RawRoom {
    /// Checks what the mirror cannot do without; `index` is the record's place on its page.
    /// Parts that cannot be used are left out and noted in `skipped`.
    pub fn validate(
        self,
        index: usize,
        skipped: &mut Vec<SkippedPart>,
    ) -> Result<Room, InvalidRecord> {
        let room_id = match self.room_id {
            Some(id) if !id.is_empty() => id,
            _ => return Err(InvalidRecord::NoRoomId { index }),
        };
        let at = |part: String, what: &'static str| SkippedPart {
            path: format!("result[{index}]{part}"),
            what,
            room_id: Some(room_id.clone()),
        };
        let group = match self.room_group.map(RawGroup::into_group) {
            Some(GroupPart::Group(g)) => Some(g),
            Some(GroupPart::WithoutId) => {
                skipped.push(at(".roomGroup".into(), "group without groupId"));
                None
            }
            Some(GroupPart::Empty) | None => None,
        };
        let mut labels: Vec<Label> = Vec::new();
        for (i, l) in self.room_labels.unwrap_or_default().into_iter().enumerate() {
            // A null item reads as nothing, as DingTalk's SDK reads it.
            let Some(l) = l else { continue };
            let Some(label_id) = l.label_id else {
                skipped.push(at(format!(".roomLabels[{i}]"), "label without labelId"));
                continue;
            };
            let label_name = l.label_name.filter(|n| !n.is_empty());
            // A repeated label id on one room: a later name wins, a nameless mention keeps it.
            match labels.iter_mut().find(|x| x.label_id == label_id) {
                Some(existing) => {
                    if label_name.is_some() {
                        existing.label_name = label_name;
                    }
                }
                None => labels.push(Label {
                    label_id,
                    label_name,
                }),
            }
        }
        let (location_title, location_desc) = match self.room_location {
            Some(loc) => (loc.title, loc.desc),
            None => (None, None),
        };
        Ok(Room {
            room_id,
            corp_id: self.corp_id,
            room_staff_id: self.room_staff_id,
            room_name: self.room_name,
            room_status: self.room_status,
            room_capacity: self.room_capacity,
            location_title,
            location_desc,
            room_picture: self.room_picture,
            isv_room_id: self.isv_room_id,
            group,
            labels,
        })
    }
}

/// What a group object amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPart {
    Group(Group),
    /// `{}`, or every field null: no group, nothing to say.
    Empty,
    /// A name or a parent but no `groupId`: no group, with a warning.
    WithoutId,
}

impl RawGroup {
    /// A group needs its id; without one it is no group.
    pub fn into_group(self) -> GroupPart {
        match self.group_id {
            Some(group_id) => GroupPart::Group(Group {
                group_id,
                group_name: self.group_name,
                parent_id: self.parent_id,
            }),
            None if self.group_name.is_none() && self.parent_id.is_none() => GroupPart::Empty,
            None => GroupPart::WithoutId,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_room(body: &[u8]) -> (Result<Room, InvalidRecord>, Vec<String>) {
        let mut page = parse_json::<RoomListPage>(body).unwrap();
        let raw = page.result.take().unwrap().pop().unwrap().unwrap();
        let mut skipped = Vec::new();
        let room = raw.validate(0, &mut skipped);
        (room, skipped.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn wrong_type_names_the_field() {
        let body =
            br#"{"hasMore":false,"result":[{"roomId":"a"},{"roomId":"b","roomCapacity":"ten"}]}"#;
        let err = parse_json::<RoomListPage>(body).unwrap_err().to_string();
        assert!(
            err.starts_with("result[1].roomCapacity: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn nulls_and_absent_fields_are_none_and_unknown_fields_ignored() {
        let body =
            br#"{"hasMore":null,"result":[{"roomId":"a","roomName":null,"brandNew":{"x":1}}]}"#;
        let (room, skipped) = one_room(body);
        let room = room.unwrap();
        assert_eq!(room.room_id, "a");
        assert_eq!(room.room_name, None);
        assert_eq!(room.group, None);
        assert!(room.labels.is_empty());
        assert!(skipped.is_empty());
    }

    #[test]
    fn missing_or_empty_room_id_is_refused() {
        for body in [
            &br#"{"result":[{"roomName":"x"}]}"#[..],
            br#"{"result":[{"roomId":""}]}"#,
            br#"{"result":[{"roomId":null}]}"#,
        ] {
            let (room, _) = one_room(body);
            assert_eq!(
                room.unwrap_err().to_string(),
                "result[0]: room without roomId"
            );
        }
    }

    #[test]
    fn repeated_label_ids_keep_the_later_name_but_not_a_missing_one() {
        let body = br#"{"result":[{"roomId":"a","roomLabels":[{"labelId":1,"labelName":"TV"},{"labelId":3},{"labelId":1,"labelName":"Television"},{"labelId":1,"labelName":""},{"labelId":1}]}]}"#;
        let (room, _) = one_room(body);
        assert_eq!(
            room.unwrap().labels,
            vec![
                Label {
                    label_id: 1,
                    label_name: Some("Television".into())
                },
                Label {
                    label_id: 3,
                    label_name: None
                }
            ]
        );
    }

    #[test]
    fn unusable_labels_and_groups_are_left_out_with_a_warning_null_items_without() {
        let body = br#"{"result":[{"roomId":"a","roomLabels":[null,{"labelName":"TV"},{"labelId":2}],"roomGroup":{"groupName":"G"}}]}"#;
        let (room, skipped) = one_room(body);
        let room = room.unwrap();
        assert_eq!(
            room.labels.iter().map(|l| l.label_id).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(room.group, None);
        assert_eq!(
            skipped,
            [
                "result[0].roomGroup: group without groupId left out (roomId \"a\")",
                "result[0].roomLabels[1]: label without labelId left out (roomId \"a\")",
            ]
        );
        for group in [r#"{}"#, r#"null"#, r#"{"groupId":null,"groupName":null}"#] {
            let body = format!(r#"{{"result":[{{"roomId":"a","roomGroup":{group}}}]}}"#);
            let (room, skipped) = one_room(body.as_bytes());
            assert_eq!(room.unwrap().group, None, "{group}");
            assert!(skipped.is_empty(), "{group}: {skipped:?}");
        }
    }
}
