//! The stand-in's room free/busy (`POST /v1.0/calendar/users/{userId}/meetingRooms/schedules/query`):
//! generated, deterministic bookings placed relative to the window asked for, so that some
//! rooms are busy now, some free all day, some booked back to back or overlapping, some given
//! in local times with a `timeZone`, and a few answered with an `error`.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The request body as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryBody {
    pub room_ids: Option<Vec<String>>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

/// The most rooms one request may ask about here (DingTalk's own limit is not documented).
pub const MAX_ROOMS_PER_REQUEST: usize = 100;

/// Why a request is refused: a message for DingTalk's `param.error`.
pub fn check(body: &QueryBody) -> Result<(Timestamp, &[String]), &'static str> {
    let rooms = body.room_ids.as_deref().ok_or("roomIds is required")?;
    if rooms.is_empty() || rooms.len() > MAX_ROOMS_PER_REQUEST {
        return Err("roomIds must name 1 to 100 rooms");
    }
    let time = |t: &Option<String>| {
        t.as_deref()
            .filter(|t| t.len() == 17 && t.ends_with('Z'))
            .and_then(|t| format!("{}:00Z", &t[..16]).parse::<Timestamp>().ok())
    };
    let start = time(&body.start_time).ok_or("startTime must be yyyy-MM-ddTHH:mmZ")?;
    let end = time(&body.end_time).ok_or("endTime must be yyyy-MM-ddTHH:mmZ")?;
    if end <= start {
        return Err("endTime must be after startTime");
    }
    Ok((start, rooms))
}

/// One room's schedule as DingTalk would send it, `rooms` being the organisation's size.
pub fn room_schedule(room_id: &str, rooms: usize, window_start: Timestamp) -> Value {
    let index = room_id
        .strip_prefix("room-")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|i| *i < rooms);
    let Some(i) = index else {
        return json!({"roomId": room_id, "error": "room not found"});
    };
    if i % 25 == 7 {
        return json!({"roomId": room_id, "error": "no permission to view this room's schedule"});
    }
    json!({"roomId": room_id, "scheduleItems": items(i, window_start)})
}

/// The bookings of room `i`, by its place in a pattern of ten.
fn items(i: usize, w: Timestamp) -> Vec<Item> {
    let utc = |from: i64, to: i64| Item::utc(i, w, from, to);
    match i % 10 {
        // Free all day.
        0 => vec![],
        // Busy now.
        1 => vec![utc(-30, 30)],
        // Back to back, later.
        2 => vec![utc(60, 120), utc(120, 180)],
        // Overlapping, now: busy until +90.
        3 => vec![utc(-10, 40), utc(20, 90)],
        // Local times in China, and in a zone with summer time.
        4 => vec![Item::local(i, w, 180, 240, "Asia/Shanghai")],
        5 => vec![Item::local(i, w, 300, 360, "Europe/Berlin")],
        // An offset of its own.
        6 => vec![Item::offset(i, w, 420, 480, 8 * 3600)],
        // Busy now, back to back: busy until +55.
        7 => vec![utc(-5, 25), utc(25, 55)],
        8 => vec![utc(480, 540)],
        _ => vec![
            utc(480, 540),
            Item {
                status: "TENTATIVE",
                ..utc(600, 630)
            },
        ],
    }
}

/// A generated booking.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    event_id: String,
    status: &'static str,
    start: Value,
    end: Value,
    organizer: Value,
}

fn at(w: Timestamp, minutes: i64) -> Timestamp {
    w.checked_add(SignedDuration::from_mins(minutes))
        .unwrap_or(w)
}

impl Item {
    fn with_times(i: usize, from: i64, start: Value, end: Value) -> Item {
        Item {
            event_id: format!("event-{i}-{from}"),
            status: "BUSY",
            start,
            end,
            organizer: json!({"id": format!("union-{:04}", i % 1000)}),
        }
    }

    fn utc(i: usize, w: Timestamp, from: i64, to: i64) -> Item {
        let text = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string();
        Item::with_times(
            i,
            from,
            json!({"dateTime": text(at(w, from)), "timeZone": "UTC"}),
            json!({"dateTime": text(at(w, to)), "timeZone": "UTC"}),
        )
    }

    /// Local date and time without an offset, to be read in `zone`.
    fn local(i: usize, w: Timestamp, from: i64, to: i64, zone: &str) -> Item {
        let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
        let text = |t: Timestamp| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S")
                .to_string()
        };
        Item::with_times(
            i,
            from,
            json!({"dateTime": text(at(w, from)), "timeZone": zone}),
            json!({"dateTime": text(at(w, to)), "timeZone": zone}),
        )
    }

    /// RFC 3339 with an offset of `seconds`.
    fn offset(i: usize, w: Timestamp, from: i64, to: i64, seconds: i32) -> Item {
        let offset = jiff::tz::Offset::from_seconds(seconds).unwrap_or(jiff::tz::Offset::UTC);
        let tz = TimeZone::fixed(offset);
        let text = |t: Timestamp| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        };
        Item::with_times(
            i,
            from,
            json!({"dateTime": text(at(w, from)), "timeZone": "Asia/Shanghai"}),
            json!({"dateTime": text(at(w, to)), "timeZone": "Asia/Shanghai"}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_follow_the_pattern_and_the_window() {
        let w: Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
        let busy_now = room_schedule("room-000001", 100, w);
        assert_eq!(
            busy_now["scheduleItems"][0]["start"]["dateTime"],
            "2026-11-27T07:30:00.000Z"
        );
        let shanghai = room_schedule("room-000004", 100, w);
        assert_eq!(
            shanghai["scheduleItems"][0]["start"]["dateTime"],
            "2026-11-27T19:00:00"
        );
        let offset = room_schedule("room-000006", 100, w);
        assert_eq!(
            offset["scheduleItems"][0]["start"]["dateTime"],
            "2026-11-27T23:00:00+08:00"
        );
        assert!(room_schedule("room-000007", 100, w)["error"].is_string());
        assert!(room_schedule("room-000500", 100, w)["error"].is_string());
        assert_eq!(
            room_schedule("room-000010", 100, w)["scheduleItems"],
            json!([])
        );
    }

    #[test]
    fn requests_are_checked_like_the_api() {
        let body = |rooms: usize, start: &str| QueryBody {
            room_ids: Some((0..rooms).map(|i| format!("room-{i:06}")).collect()),
            start_time: Some(start.into()),
            end_time: Some("2026-11-28T08:00Z".into()),
        };
        assert!(check(&body(20, "2026-11-27T08:00Z")).is_ok());
        assert!(check(&body(101, "2026-11-27T08:00Z")).is_err());
        assert!(check(&body(1, "2026-11-27T08:00:00.000Z")).is_err());
        assert!(check(&body(1, "2026-11-29T08:00Z")).is_err());
    }
}
