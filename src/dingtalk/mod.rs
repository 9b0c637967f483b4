//! The DingTalk open API, as far as roomsync needs it.

pub mod calls;
pub mod client;
pub mod model;
pub mod schedule;

pub use calls::{CallCounts, CallTally};
pub use client::{endpoints, DingTalkApi, DingTalkClient, Observer};
pub use model::{Group, Label, Room, RoomListPage};
