//! roomsync keeps a local SQLite mirror of an organisation's DingTalk meeting rooms.
//!
//! Layout: [`config`] (settings), [`dingtalk`] (the API client), [`store`] (the database),
//! [`sync`] (one run), [`lock`] (one run at a time), [`daemon`] (the schedule),
//! [`status`] (monitoring), [`cli`] (the command line), [`manual`] (man pages and completions
//! from the command line's definition).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dingtalk;
pub mod failure;
pub mod lock;
pub mod manual;
pub mod standin;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
