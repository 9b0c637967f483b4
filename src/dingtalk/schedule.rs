//! Room free/busy (`POST /v1.0/calendar/users/{userId}/meetingRooms/schedules/query`): what
//! DingTalk sends, and the busy items the store keeps. See `../shared/api/meetingRoomSchedules.md`.
//!
//! Every field is optional, as in DingTalk's SDK. A time that cannot be read (unparseable, or a
//! local time whose `timeZone` is not an IANA name) leaves its item out with a warning; the
//! room's other items are kept. Times are stored as RFC 3339 UTC with seconds (`...Z`).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::model::SkippedPart;

/// The request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleQuery<'a> {
    pub room_ids: &'a [String],
    /// `yyyy-MM-ddTHH:mmZ`, UTC, as the SDK asks.
    pub start_time: &'a str,
    pub end_time: &'a str,
}

/// The answer, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleAnswer {
    #[serde(default)]
    pub schedule_information: Option<Vec<Option<RawRoomSchedule>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRoomSchedule {
    #[serde(default)]
    pub room_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    schedule_items: Option<Vec<Option<RawItem>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    start: Option<RawTime>,
    #[serde(default)]
    end: Option<RawTime>,
    #[serde(default)]
    organizer: Option<RawOrganizer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTime {
    #[serde(default)]
    date_time: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawOrganizer {
    #[serde(default)]
    id: Option<String>,
}

/// A busy item as stored in `room_busy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyItem {
    pub start_at: String,
    pub end_at: String,
    pub event_id: Option<String>,
    pub status: Option<String>,
    pub organizer_id: Option<String>,
    /// The start's `timeZone` as sent.
    pub time_zone: Option<String>,
}

impl RawRoomSchedule {
    /// The room's readable items; `at` is the room's place in the answer (for the paths of
    /// the warnings about items left out).
    pub fn items(self, at: usize, room_id: &str, skipped: &mut Vec<SkippedPart>) -> Vec<BusyItem> {
        let mut items = Vec::new();
        for (j, raw) in self
            .schedule_items
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let Some(raw) = raw else { continue };
            let path = |part: &str| format!("scheduleInformation[{at}].scheduleItems[{j}]{part}");
            let left_out = |part: &str, what: &'static str| SkippedPart {
                path: path(part),
                what,
                room_id: Some(room_id.to_string()),
            };
            let time_zone = raw.start.as_ref().and_then(|t| t.time_zone.clone());
            let start = match read_time(raw.start.as_ref()) {
                Ok(t) => t,
                Err(what) => {
                    skipped.push(left_out(".start", what));
                    continue;
                }
            };
            let end = match read_time(raw.end.as_ref()) {
                Ok(t) => t,
                Err(what) => {
                    skipped.push(left_out(".end", what));
                    continue;
                }
            };
            if end <= start {
                skipped.push(left_out("", "item that ends before it starts"));
                continue;
            }
            items.push(BusyItem {
                start_at: utc_text(start),
                end_at: utc_text(end),
                event_id: raw.event_id,
                status: raw.status,
                organizer_id: raw.organizer.and_then(|o| o.id),
                time_zone,
            });
        }
        items
    }
}

/// A time as DingTalk may send it: RFC 3339 with an offset, or a local date and time (or an
/// all-day date) to be read in its `timeZone`.
fn read_time(raw: Option<&RawTime>) -> Result<Timestamp, &'static str> {
    let raw = raw.ok_or("item without a time")?;
    let text = raw
        .date_time
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("item without a dateTime")?;
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let local = text
        .parse::<DateTime>()
        .or_else(|_| {
            text.parse::<Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| "item with a dateTime that cannot be read")?;
    let zone = raw
        .time_zone
        .as_deref()
        .ok_or("item with a local time and no timeZone")?;
    let tz = TimeZone::get(zone).map_err(|_| "item with a timeZone that is not an IANA name")?;
    // A time in a DST gap or fold is read as most calendar software does (jiff's compatible).
    tz.to_timestamp(local)
        .map_err(|_| "item with a local time that does not exist in its timeZone")
}

/// RFC 3339 UTC with seconds and `Z`, e.g. `2026-11-27T08:00:00Z`.
pub fn utc_text(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(start: serde_json::Value, end: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"eventId": "e", "status": "BUSY", "start": start, "end": end,
                           "organizer": {"id": "u1"}})
    }

    fn read(items: Vec<serde_json::Value>) -> (Vec<BusyItem>, Vec<String>) {
        let room: RawRoomSchedule = serde_json::from_value(serde_json::json!({
            "roomId": "r1", "scheduleItems": items
        }))
        .unwrap();
        let mut skipped = Vec::new();
        let items = room.items(3, "r1", &mut skipped);
        (items, skipped.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn offsets_and_local_times_in_their_zone_become_utc() {
        let (items, skipped) = read(vec![
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00+08:00", "timeZone": "Asia/Shanghai"}),
                serde_json::json!({"dateTime": "2026-11-27T11:30:00.000+08:00"}),
            ),
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00", "timeZone": "Asia/Shanghai"}),
                serde_json::json!({"dateTime": "2026-11-27T10:45", "timeZone": "Asia/Shanghai"}),
            ),
            // Berlin in summer (+02:00) and in winter (+01:00).
            item(
                serde_json::json!({"dateTime": "2026-07-01T09:00:00", "timeZone": "Europe/Berlin"}),
                serde_json::json!({"dateTime": "2026-07-01T10:00:00", "timeZone": "Europe/Berlin"}),
            ),
            item(
                serde_json::json!({"dateTime": "2026-12-01T09:00:00", "timeZone": "Europe/Berlin"}),
                serde_json::json!({"dateTime": "2026-12-01", "timeZone": "Europe/Berlin"}),
            ),
        ]);
        assert!(
            skipped.len() == 1 && skipped[0].contains("ends before it starts"),
            "{skipped:?}"
        );
        let times: Vec<(String, String)> = items
            .iter()
            .map(|i| (i.start_at.clone(), i.end_at.clone()))
            .collect();
        assert_eq!(
            times,
            [
                ("2026-11-27T02:00:00Z".into(), "2026-11-27T03:30:00Z".into()),
                ("2026-11-27T02:00:00Z".into(), "2026-11-27T02:45:00Z".into()),
                ("2026-07-01T07:00:00Z".into(), "2026-07-01T08:00:00Z".into()),
            ]
        );
        assert_eq!(items[1].time_zone.as_deref(), Some("Asia/Shanghai"));
        assert_eq!(items[0].organizer_id.as_deref(), Some("u1"));
    }

    #[test]
    fn unreadable_times_leave_their_item_out_with_a_warning() {
        let (items, skipped) = read(vec![
            item(
                serde_json::json!({"dateTime": "yesterday"}),
                serde_json::json!({"dateTime": "2026-11-27T11:00:00Z"}),
            ),
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00", "timeZone": "Mars/Olympus"}),
                serde_json::json!({"dateTime": "2026-11-27T11:00:00Z"}),
            ),
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00"}),
                serde_json::json!({"dateTime": "2026-11-27T11:00:00Z"}),
            ),
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00Z"}),
                serde_json::Value::Null,
            ),
            serde_json::Value::Null,
            item(
                serde_json::json!({"dateTime": "2026-11-27T10:00:00Z"}),
                serde_json::json!({"dateTime": "2026-11-27T11:00:00Z"}),
            ),
        ]);
        assert_eq!(items.len(), 1);
        assert_eq!(
            skipped,
            [
                "scheduleInformation[3].scheduleItems[0].start: item with a dateTime that cannot be read left out (roomId \"r1\")",
                "scheduleInformation[3].scheduleItems[1].start: item with a timeZone that is not an IANA name left out (roomId \"r1\")",
                "scheduleInformation[3].scheduleItems[2].start: item with a local time and no timeZone left out (roomId \"r1\")",
                "scheduleInformation[3].scheduleItems[3].end: item without a time left out (roomId \"r1\")",
            ]
        );
    }
}
