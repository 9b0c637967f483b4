//! roomsync keeps a local SQLite mirror of an organisation's DingTalk meeting rooms.
//!
//! Layout, top to bottom (a module uses only its own layer and the layers below; the test
//! `tests/layout.rs` keeps it so):
//! - [`cli`]: the command line and exit codes; [`manual`]: its man pages and completions;
//! - [`daemon`] (the schedule), [`status`] (`roomsync status`), [`demo`] (`--demo`);
//! - [`sync`] (one run: fetch, ledger, apply), [`standin`] (a stand-in DingTalk API);
//! - [`store`] (the database: opening, migrations, runs, staging, the apply), [`dingtalk`]
//!   (the API client and its data), [`notify`] (the webhook);
//! - [`config`] (settings), [`lock`] (one run at a time), [`failure`] (a run's errors),
//!   [`telemetry`] (logging), [`signal`] (SIGTERM and SIGINT), [`metrics`] (Prometheus),
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
