//! roomsync keeps a local SQLite mirror of an organisation's DingTalk meeting rooms.
//!
//! Layout, top to bottom (a module uses only its own layer and the layers below; the test
//! `tests/layout.rs` keeps it so):
//! - [`cli`]: the command line and exit codes; [`manual`]: its man pages and completions;
//! - [`daemon`] (the schedules), [`status`] (`roomsync status`, the API budget included),
//!   [`demo`] (`--demo`);
//! - [`sync`] (one run: fetch, ledger, apply; an availability refresh; starting runs),
//!   [`standin`] (a stand-in DingTalk API, and `roomsync stand-in`);
//! - [`store`] (the database: opening, migrations, runs, staging, the apply, availability,
//!   API calls), [`dingtalk`] (the API client and its data), [`notify`] (the webhook);
//! - [`config`] (settings), [`lock`] (one run at a time), [`failure`] (a run's errors),
//!   [`telemetry`] (logging), [`signal`] (SIGTERM and SIGINT), [`metrics`] (Prometheus),
//!   [`budget`] (DingTalk's monthly API quota: quota months and the even-spending line),
//!   [`http`] (what every HTTP client shares: TLS).

pub mod budget;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dingtalk;
pub mod failure;
pub mod http;
pub mod lock;
pub mod manual;
pub mod metrics;
pub mod notify;
pub mod signal;
pub mod standin;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
