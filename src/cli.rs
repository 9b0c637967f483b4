//! The command line: parse, load settings, dispatch, map outcomes to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::signal::ShutdownSignals;
use crate::store::runs::{RunStatus, Trigger};
use crate::sync::{RunError, RunReport, Runner, SyncOptions};

/// Exit codes: a contract for scripts and monitoring.
pub mod exit {
    pub const OK: u8 = 0;
    /// The sync failed or was interrupted (recorded in the database when it could be).
    pub const FAILED: u8 = 1;
    /// Usage or configuration error; nothing was touched.
    pub const USAGE: u8 = 2;
    /// Another sync holds the lock for this database (EX_TEMPFAIL).
    pub const LOCKED: u8 = 75;
}

#[derive(Debug, Parser)]
#[command(
    name = "roomsync",
    version,
    about = "Keeps a local SQLite mirror of an organisation's DingTalk meeting rooms",
    long_about = "Keeps a local SQLite mirror of an organisation's DingTalk meeting rooms.\n\n\
        Without a mode flag or command, runs as a daemon that syncs on [schedule] cron.",
    after_help = "Exit codes: 0 success, 1 sync failed (status: stale), 2 usage or configuration error, \
        75 another sync holds the lock."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Run one sync now and exit (trigger 'manual').
    #[arg(long)]
    pub sync_now: bool,

    /// With --sync-now: let this one run remove more rooms than sync.max_removal_ratio allows.
    #[arg(long, requires = "sync_now")]
    pub allow_mass_removal: bool,

    /// With --sync-now: refresh the rooms' availability only, not the room list (needs
    /// availability.enabled).
    #[arg(long, requires = "sync_now", conflicts_with = "allow_mass_removal")]
    pub availability_only: bool,

    /// Sync a generated organisation from a built-in stand-in DingTalk API into
    /// ./roomsync-demo.db; needs no config file and no credentials.
    #[arg(long, conflicts_with_all = ["sync_now", "config"])]
    pub demo: bool,

    /// Configuration file [default: $ROOMSYNC_CONFIG, else /etc/roomsync/roomsync.toml].
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the stand-in DingTalk API, a generated organisation, until SIGTERM/SIGINT.
    ///
    /// For trying roomsync or its service without DingTalk credentials. It accepts only its
    /// own credentials: app_key "standin-app-key", app secret "standin-app-secret-0000",
    /// union_id "standin-union-id"; point dingtalk.base_url at http://ADDR:PORT. It tells
    /// systemd READY=1 once it listens (Type=notify) and needs no configuration file.
    StandIn(StandInArgs),
    /// Show the latest runs and the age of the last success; exit 0 when it is younger than
    /// --max-age, 1 when older or when there is none.
    ///
    /// Reads the database read-only and never waits for a running sync. Of the configuration it
    /// reads only database.path: it needs no DingTalk credentials, so any member of the group
    /// roomsync can run it.
    Status {
        /// Oldest acceptable last success, e.g. 90m, 2h, 1day.
        #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
        /// How many of the latest runs to list.
        #[arg(long, value_name = "N", default_value_t = 10)]
        runs: u32,
        /// Also exit 1 when the last successful availability refresh is older than this (or
        /// there is none); unchecked when absent.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        availability_max_age: Option<std::time::Duration>,
    },
}

#[derive(Debug, clap::Args)]
pub struct StandInArgs {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8089")]
    pub listen: std::net::SocketAddr,
    /// Rooms in the generated organisation.
    #[arg(long, value_name = "N", default_value_t = 3_000,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rooms: u32,
    /// Seed of the generated organisation: the same seed and size give the same rooms.
    #[arg(long, value_name = "N", default_value_t = 2026)]
    pub seed: u64,
    /// Serve the organisation as changed this many times (each revision changes 5% of the rooms).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub revision: u32,
    /// Delay added to every page of the room list, e.g. 500ms or 2s: a slow upstream.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub page_latency: std::time::Duration,
}

/// The whole program; `main` only calls this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if (cli.sync_now || cli.demo) && cli.command.is_some() {
        eprintln!("roomsync: --sync-now and --demo cannot be combined with a command");
        return ExitCode::from(exit::USAGE);
    }
    if cli.demo {
        // The demo's stand-in answers a few rooms with errors on purpose: their warnings are
        // in the database, not on the screen.
        crate::telemetry::init(&crate::config::LogSettings {
            level: "error".into(),
            format: crate::config::LogFormat::Text,
        });
        crate::telemetry::log_panics();
        return ExitCode::from(block_on(demo()));
    }
    if let Some(command) = cli.command {
        return ExitCode::from(run_command(command, cli.config.as_deref()));
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomsync: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    crate::telemetry::init(&settings.log);
    crate::telemetry::log_panics();
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    ExitCode::from(block_on(async {
        if cli.sync_now {
            let asked = OneShot {
                allow_mass_removal: cli.allow_mass_removal,
                availability_only: cli.availability_only,
            };
            sync_now(&settings, asked).await
        } else {
            daemon(settings).await
        }
    }))
}

/// The commands, which need less than the whole configuration: `status` reads only
/// `[database]` (no credentials), `stand-in` no configuration at all.
fn run_command(command: Command, config: Option<&std::path::Path>) -> u8 {
    match command {
        Command::Status {
            max_age,
            runs,
            availability_max_age,
        } => {
            let database = match crate::config::DatabaseSettings::load(config) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("roomsync: {e}");
                    return exit::USAGE;
                }
            };
            crate::telemetry::init(&crate::config::LogSettings {
                level: "warn".into(),
                format: crate::config::LogFormat::Text,
            });
            crate::telemetry::log_panics();
            let ages = Ages {
                rooms: max_age,
                availability: availability_max_age,
            };
            block_on(status(&database.path, ages, runs))
        }
        Command::StandIn(args) => {
            if let Some(e) = std::env::var("RUST_LOG")
                .ok()
                .and_then(|v| crate::config::validate_log_filter("RUST_LOG", &v).err())
            {
                eprintln!("roomsync: {e}");
                return exit::USAGE;
            }
            crate::telemetry::init(&crate::config::LogSettings::default());
            crate::telemetry::log_panics();
            block_on(stand_in(args))
        }
    }
}

/// `stand-in`: serves until SIGTERM/SIGINT (exit 0); 1 when the address cannot be bound.
async fn stand_in(args: StandInArgs) -> u8 {
    let shutdown = cancel_on_signal();
    let mut org = crate::standin::OrgSpec::new(args.seed, args.rooms as usize);
    org.revision = args.revision;
    let mut config = crate::standin::StandInConfig::new(org);
    config.page_latency = args.page_latency;
    match crate::standin::standalone::serve(args.listen, config, shutdown).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("roomsync: stand-in: {e}");
            exit::FAILED
        }
    }
}

fn block_on(mode: impl std::future::Future<Output = u8>) -> u8 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(mode)
}

/// The exit code of a one-shot run that was recorded; `success` prints what a succeeded run
/// leaves on stdout, anything else is one line on stderr.
fn report_outcome(report: &RunReport, success: impl FnOnce(&RunReport) -> String) -> u8 {
    if report.status == RunStatus::Succeeded {
        println!("{}", success(report));
        exit::OK
    } else {
        eprintln!("roomsync: {report}");
        exit::FAILED
    }
}

/// `--demo`: the stand-in, one sync and one refresh into ./roomsync-demo.db, and queries to
/// try.
async fn demo() -> u8 {
    match crate::demo::run(cancel_on_signal()).await {
        Ok(reports) if reports.succeeded() => {
            println!("{}", crate::demo::next_steps(&reports));
            exit::OK
        }
        Ok(reports) => {
            let failed = reports
                .refresh
                .filter(|_| reports.sync.status == RunStatus::Succeeded)
                .unwrap_or(reports.sync);
            eprintln!("roomsync: {failed}");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("roomsync: demo failed: {e:#}");
            exit::FAILED
        }
    }
}

/// Daemon mode: runs until SIGTERM/SIGINT (exit 0); start-up problems exit 1.
async fn daemon(settings: Settings) -> u8 {
    match crate::daemon::run(settings).await {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "roomsync daemon cannot start");
            eprintln!("roomsync: cannot start: {e:#}");
            exit::FAILED
        }
    }
}

/// The oldest acceptable last successes, of the room list and of the availability.
struct Ages {
    rooms: Duration,
    availability: Option<Duration>,
}

/// `status`: exit 0 when the last success is younger than `--max-age` (and the last refresh
/// younger than `--availability-max-age`, when given), else 1.
async fn status(db: &std::path::Path, ages: Ages, runs: u32) -> u8 {
    match crate::status::read(db, runs).await {
        Ok(report) => {
            print!("{}", report.render(db, ages.rooms, ages.availability));
            let availability_fresh = ages
                .availability
                .is_none_or(|max| report.availability_is_fresh(max));
            if report.is_fresh(ages.rooms) && availability_fresh {
                exit::OK
            } else {
                exit::FAILED
            }
        }
        Err(e) => {
            eprintln!("roomsync: {e}");
            exit::FAILED
        }
    }
}

/// What `--sync-now` was asked to do.
#[derive(Debug, Clone, Copy)]
struct OneShot {
    allow_mass_removal: bool,
    availability_only: bool,
}

/// `--sync-now`: the room list, then (when enabled) one availability refresh, or the refresh
/// alone; each run's summary, and exit 0 only when every run succeeded. A webhook under way is
/// waited for before the process ends (it never changes the exit code).
async fn sync_now(settings: &Settings, asked: OneShot) -> u8 {
    if asked.availability_only && !settings.availability.enabled {
        eprintln!(
            "roomsync: configuration: availability.enabled: --availability-only needs the \
             availability refresh enabled ([availability] enabled = true)"
        );
        return exit::USAGE;
    }
    let runner = match Runner::new(settings.clone(), Metrics::new()) {
        Ok(runner) => runner,
        Err(e) => {
            eprintln!("roomsync: {e}");
            return exit::FAILED;
        }
    };
    let shutdown = cancel_on_signal();
    let mut code = exit::OK;
    if !asked.availability_only {
        let options = SyncOptions {
            trigger: Trigger::Manual,
            allow_mass_removal: asked.allow_mass_removal,
        };
        code = one_shot_code(runner.run_once(options, shutdown.clone()).await);
    }
    let refresh = settings.availability.enabled && code != exit::LOCKED;
    if refresh && !shutdown.is_cancelled() {
        let refreshed = runner.refresh_once(Trigger::Manual, shutdown).await;
        code = code.max(one_shot_code(refreshed));
    }
    // Four attempts of at most timeout_secs each, and the waits of 1, 2 and 4 s between.
    if let Some(notify) = &settings.notify {
        let limit = notify.timeout * 4 + Duration::from_secs(8);
        if !runner.finish_deliveries(limit).await {
            tracing::warn!("the webhook delivery did not end in time");
        }
    }
    code
}

/// A one-shot run's summary and exit code.
fn one_shot_code(outcome: Result<RunReport, RunError>) -> u8 {
    match outcome {
        Ok(report) => report_outcome(&report, RunReport::to_string),
        Err(e) => {
            eprintln!("roomsync: {e}");
            match e {
                RunError::Locked { .. } => exit::LOCKED,
                _ => exit::FAILED,
            }
        }
    }
}

/// A token cancelled by the first SIGTERM or SIGINT.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    match ShutdownSignals::register() {
        Ok(signals) => {
            tokio::spawn(signals.cancel_on_signal(token.clone()));
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGTERM and SIGINT"),
    }
    token
}
