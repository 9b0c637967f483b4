//! What DingTalk sends, and the validated records the store works with.
//!
//! Field types follow the official SDK models (see `../shared/api/dingtalk-notes.md`): every
//! field is optional and may be null; unknown fields are ignored; a wrong type is an error.

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
    #[serde(default)]
    pub result: Option<Vec<RawRoom>>,
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
    room_labels: Option<Vec<RawLabel>>,
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
    pub result: Option<Vec<RawGroup>>,
}

/// The body of `POST /v1.0/oauth2/accessToken`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: Option<String>,
    pub expire_in: Option<i64>,
}

/// A validated room, ready to be staged.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A record the mirror cannot do without a part of; `index` is the record's place on its page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("result[{index}]: room without roomId")]
    NoRoomId { index: usize },
    #[error("result[{index}] (roomId {room_id:?}).roomGroup: {source}")]
    Group {
        index: usize,
        room_id: String,
        source: NoGroupId,
    },
    #[error("result[{index}] (roomId {room_id:?}).roomLabels[{label}]: label without labelId")]
    NoLabelId {
        index: usize,
        room_id: String,
        label: usize,
    },
}

/// A room group without `groupId`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group without groupId")]
pub struct NoGroupId;

/// Parses a JSON body, naming the path of the offending field on error
/// (e.g. `result[3].roomCapacity: invalid type: string "ten", expected i64`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
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
    pub fn validate(self, index: usize) -> Result<Room, InvalidRecord> {
        let room_id = match self.room_id {
            Some(id) if !id.is_empty() => id,
            _ => return Err(InvalidRecord::NoRoomId { index }),
        };
        let group = match self.room_group {
            None => None,
            Some(g) => Some(g.validate().map_err(|source| InvalidRecord::Group {
                index,
                room_id: room_id.clone(),
                source,
            })?),
        };
        let mut labels: Vec<Label> = Vec::new();
        for (i, l) in self.room_labels.unwrap_or_default().into_iter().enumerate() {
            let Some(label_id) = l.label_id else {
                return Err(InvalidRecord::NoLabelId {
                    index,
                    room_id,
                    label: i,
                });
            };
            // A repeated label id on one room: the later entry wins, as with repeated rooms.
            match labels.iter_mut().find(|x| x.label_id == label_id) {
                Some(existing) => existing.label_name = l.label_name,
                None => labels.push(Label {
                    label_id,
                    label_name: l.label_name,
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

impl RawGroup {
    /// A group needs its id.
    pub fn validate(self) -> Result<Group, NoGroupId> {
        let group_id = self.group_id.ok_or(NoGroupId)?;
        Ok(Group {
            group_id,
            group_name: self.group_name,
            parent_id: self.parent_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let page = parse_json::<RoomListPage>(body).unwrap();
        assert_eq!(page.has_more, None);
        let room = page.result.unwrap().pop().unwrap().validate(0).unwrap();
        assert_eq!(room.room_id, "a");
        assert_eq!(room.room_name, None);
        assert_eq!(room.group, None);
        assert!(room.labels.is_empty());
    }

    #[test]
    fn missing_or_empty_room_id_is_refused() {
        for body in [
            &br#"{"result":[{"roomName":"x"}]}"#[..],
            br#"{"result":[{"roomId":""}]}"#,
        ] {
            let mut page = parse_json::<RoomListPage>(body).unwrap();
            let err = page
                .result
                .take()
                .unwrap()
                .pop()
                .unwrap()
                .validate(0)
                .unwrap_err();
            assert_eq!(err.to_string(), "result[0]: room without roomId");
        }
    }

    #[test]
    fn repeated_label_ids_keep_the_later_name() {
        let body = br#"{"result":[{"roomId":"a","roomLabels":[{"labelId":1,"labelName":"TV"},{"labelId":3},{"labelId":1,"labelName":"Television"}]}]}"#;
        let mut page = parse_json::<RoomListPage>(body).unwrap();
        let room = page
            .result
            .take()
            .unwrap()
            .pop()
            .unwrap()
            .validate(0)
            .unwrap();
        assert_eq!(
            room.labels,
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
    fn label_or_group_without_id_is_refused() {
        let body = br#"{"result":[{"roomId":"a","roomLabels":[{"labelName":"TV"}]}]}"#;
        let mut page = parse_json::<RoomListPage>(body).unwrap();
        let err = page
            .result
            .take()
            .unwrap()
            .pop()
            .unwrap()
            .validate(0)
            .unwrap_err();
        assert!(err.to_string().contains("label without labelId"), "{err}");
        let body = br#"{"result":[{"roomId":"a","roomGroup":{"groupName":"G"}}]}"#;
        let mut page = parse_json::<RoomListPage>(body).unwrap();
        let err = page
            .result
            .take()
            .unwrap()
            .pop()
            .unwrap()
            .validate(0)
            .unwrap_err();
        assert!(err.to_string().contains("group without groupId"), "{err}");
    }
}
