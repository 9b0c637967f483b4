//! `cargo bench --bench sync`: roomsync against the built-in stand-in DingTalk API, in one
//! process run. Prints rooms per second, the ratio of each sync to a baseline that fetches and
//! parses the same pages but stores nothing, peak resident memory, and the latency run.
//!
//! Targets: initial 100k-room sync within 3x the baseline, no-change resync within 1.3x, peak
//! memory under 100 MB at 100k rooms, 100 pages at 20 ms latency within 1.1x of pure waiting,
//! an availability refresh of 10,000 rooms (500 requests of 20 rooms, 4 in flight, 20 ms each)
//! within 1.2x of pure waiting at 1,000 requests/s and within 1.05x at DingTalk's 20/s.
//! Options (environment): ROOMSYNC_BENCH_SIZES=1000,10000 to choose sizes;
//! RUST_LOG=roomsync::sync=debug,roomsync::store=debug for the phase timings of each run and
//! the apply's step timings.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomsync::config::Settings;
use roomsync::dingtalk::DingTalkApi;
use roomsync::metrics::Metrics;
use roomsync::standin::{settings_for, OrgSpec, StandIn, StandInConfig};
use roomsync::store::runs::{RunStatus, Trigger};
use roomsync::sync::{run_once, RunReport, Runner, SyncOptions};
use tokio_util::sync::CancellationToken;

const SEED: u64 = 20261125;

/// Peak and current resident memory of this process, in MiB (VmHWM, VmRSS).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak (VmHWM) to the current RSS, so each size's peak is its own.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Fetches and parses every page through the same client, storing nothing. Returns rooms seen.
async fn baseline(settings: &Settings) -> (usize, u32) {
    let api = DingTalkApi::new(settings.dingtalk.clone(), Metrics::new()).unwrap();
    let client = api.client(Arc::new(|_| {}), Default::default());
    let (mut rooms, mut pages, mut next) = (0, 0u32, None);
    loop {
        let page = client.room_page(pages, next).await.expect("baseline page");
        pages += 1;
        rooms += page.result.map_or(0, |r| r.len());
        if page.has_more != Some(true) {
            return (rooms, pages);
        }
        next = page.next_token;
    }
}

async fn sync(settings: &Settings) -> RunReport {
    let options = SyncOptions {
        trigger: Trigger::Manual,
        allow_mass_removal: true,
    };
    let report = run_once(settings, options, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    report
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

struct Row {
    what: String,
    rooms: usize,
    time: Duration,
    baseline: Duration,
    peak_mib: f64,
}

impl Row {
    fn print(&self) {
        println!(
            "{:<34} {:>8} {:>9.3}s {:>12.0} {:>9.3}s {:>7.2}x {:>9.1}",
            self.what,
            self.rooms,
            self.time.as_secs_f64(),
            self.rooms as f64 / self.time.as_secs_f64(),
            self.baseline.as_secs_f64(),
            self.ratio(),
            self.peak_mib
        );
    }

    fn ratio(&self) -> f64 {
        self.time.as_secs_f64() / self.baseline.as_secs_f64()
    }
}

/// `n` rounds of a baseline run then a timed run of `f` (given the round's index): the best
/// time of each. Alternating the two keeps a slow spell of the machine from landing on one
/// side of the ratio only.
async fn paired<F, Fut>(n: usize, settings: &Settings, mut f: F) -> (Duration, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (mut best, mut best_baseline) = (Duration::MAX, Duration::MAX);
    for i in 0..n {
        let (_, t) = timed(baseline(settings)).await;
        best_baseline = best_baseline.min(t);
        let ((), t) = timed(f(i)).await;
        best = best.min(t);
    }
    (best, best_baseline)
}

/// Rounds per measurement: more for the quick no-change resync, whose ratio the machine's
/// noise moves most.
const INITIAL_ROUNDS: usize = 3;
const NO_CHANGE_ROUNDS: usize = 5;
const CHANGED_ROUNDS: usize = 3;
const LATENCY_ROUNDS: usize = 3;
const AVAILABILITY_ROUNDS: usize = 3;
/// A refresh at 20 requests/s takes 25 s of pure waiting: fewer rounds of it.
const SLOW_AVAILABILITY_ROUNDS: usize = 2;

/// Initial syncs (each into a new database), then resyncs without change (of the first of
/// them) and resyncs with 5% changed (each from one of the unchanged mirrors), each round
/// paired with a baseline run.
async fn run_size(rooms: usize, dir: &Path) -> Vec<Row> {
    let standin = StandIn::start(StandInConfig::new(OrgSpec::new(SEED, rooms)))
        .await
        .unwrap();
    let db = |name: &str| dir.join(format!("bench-{rooms}-{name}.db"));
    let settings_at = |name: &str| settings_for(&standin, db(name));
    let reference = settings_at("baseline");
    let mut rows = Vec::new();
    let mut row = |what: &str, (time, baseline): (Duration, Duration), peak_mib: f64| {
        rows.push(Row {
            what: what.into(),
            rooms,
            time,
            baseline,
            peak_mib,
        })
    };

    let peak_reset = reset_peak();
    let times = paired(INITIAL_ROUNDS, &reference, |i| {
        let settings = settings_at(&format!("initial{i}"));
        async move {
            let report = sync(&settings).await;
            assert_eq!(report.counts.unwrap().added as usize, rooms);
        }
    })
    .await;
    let peak = if peak_reset { memory_mib().0 } else { f64::NAN };
    row("initial sync (empty database)", times, peak);

    let mirror = settings_at("initial0");
    reset_peak();
    let times = paired(NO_CHANGE_ROUNDS, &reference, |_| async {
        assert_eq!(sync(&mirror).await.counts.unwrap().updated, 0);
    })
    .await;
    row("resync, no change", times, memory_mib().0);

    standin.set_org(OrgSpec {
        revision: 1,
        ..standin.org()
    });
    reset_peak();
    let times = paired(CHANGED_ROUNDS, &reference, |i| {
        // Each round starts from a mirror of the unchanged organisation.
        let settings = settings_at(&format!("initial{i}"));
        async move {
            assert_eq!(
                sync(&settings).await.counts.unwrap().updated as usize,
                rooms / 20
            );
        }
    })
    .await;
    row("resync, 5% changed", times, memory_mib().0);
    standin.stop().await;
    assert_no_dangling_references(&db("initial0")).await;
    rows
}

/// The apply writes with foreign-key enforcement off; checked here, outside the timings, on
/// the mirror every resync of the size went through.
async fn assert_no_dangling_references(db: &Path) {
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true),
    )
    .await
    .unwrap();
    let dangling: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_foreign_key_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(dangling, 0, "dangling references in {}", db.display());
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo test --benches` runs bench targets with --test/--bench flags; stay quick there.
    if std::env::args().any(|a| a == "--test") {
        println!("sync benchmark: skipped under cargo test (run cargo bench --bench sync)");
        return;
    }
    if std::env::var("RUST_LOG").is_ok() {
        // Phase and apply-step timings of each run:
        // RUST_LOG=roomsync::sync=debug,roomsync::store=debug.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let sizes: Vec<usize> = std::env::var("ROOMSYNC_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let dir = tempfile::tempdir().unwrap();
    let (_, rss_start) = memory_mib();
    println!("roomsync sync benchmark (stand-in on loopback, page size 100, release build)");
    println!("process RSS before the first run: {rss_start:.1} MiB\n");
    println!(
        "{:<34} {:>8} {:>10} {:>12} {:>10} {:>8} {:>9}",
        "run", "rooms", "time", "rooms/s", "baseline", "ratio", "peak MiB"
    );
    let mut all = Vec::new();
    for &rooms in &sizes {
        let rows = run_size(rooms, dir.path()).await;
        for row in &rows {
            row.print();
        }
        all.extend(
            rows.into_iter()
                .map(|r| (r.rooms, r.what.clone(), r.ratio(), r.peak_mib)),
        );
    }

    // Latency: 100 pages, each answered after 20 ms. Pure waiting is 100 x 20 ms = 2 s.
    // Measured for the initial sync (best of three, each into a new database) and for the
    // steady state, a resync without change (best of three).
    let mut config = StandInConfig::new(OrgSpec::new(SEED, 10_000));
    config.page_latency = Duration::from_millis(20);
    let standin = StandIn::start(config).await.unwrap();
    let latency_db =
        |i: usize| settings_for(&standin, dir.path().join(format!("bench-latency{i}.db")));
    let waiting = Duration::from_millis(20 * 100);
    println!();
    let mut latency = Vec::new();
    for what in ["initial sync", "resync, no change"] {
        let mut best = Duration::MAX;
        for i in 0..LATENCY_ROUNDS {
            let settings = latency_db(if what == "initial sync" { i } else { 0 });
            let (report, t) = timed(sync(&settings)).await;
            assert_eq!(report.pages_fetched, 100);
            best = best.min(t);
        }
        let ratio = best.as_secs_f64() / waiting.as_secs_f64();
        println!(
            "latency run, {what}: 100 pages x 20 ms: {:.3}s against {:.3}s of pure waiting = {ratio:.3}x",
            best.as_secs_f64(),
            waiting.as_secs_f64()
        );
        latency.push((what, ratio));
    }
    standin.stop().await;
    let availability = availability_runs(dir.path()).await;

    println!("\ntargets:");
    let mut ok = true;
    let mut check = |name: &str, value: f64, limit: f64, unit: &str| {
        let pass = value <= limit;
        ok &= pass;
        println!(
            "  {:<46} {value:>8.2}{unit} (limit {limit}{unit}) {}",
            name,
            if pass { "PASS" } else { "FAIL" }
        );
    };
    for (rooms, what, ratio, peak) in &all {
        if *rooms == 100_000 {
            match what.as_str() {
                "initial sync (empty database)" => {
                    check("initial 100k sync / baseline", *ratio, 3.0, "x");
                    check("peak memory at 100k rooms", *peak, 100.0, " MiB");
                }
                "resync, no change" => check("no-change 100k resync / baseline", *ratio, 1.3, "x"),
                _ => {}
            }
        }
    }
    for (what, ratio) in latency {
        check(
            &format!("latency run ({what}) / pure waiting"),
            ratio,
            1.1,
            "x",
        );
    }
    for run in availability {
        check(
            &format!(
                "availability at {} req/s / pure waiting",
                run.requests_per_second
            ),
            run.ratio,
            run.limit,
            "x",
        );
    }
    println!(
        "\n{}",
        if ok {
            "all targets met"
        } else {
            "SOME TARGETS MISSED"
        }
    );
}

/// One availability measurement: the best refresh time against its pure waiting time.
struct AvailabilityRun {
    requests_per_second: f64,
    ratio: f64,
    limit: f64,
}

/// Availability refreshes of 10,000 rooms, each request answered after 20 ms: 500 requests of
/// 20 rooms, 4 in flight. The limit binds at 20 requests/s (500 / 20 = 25 s of waiting) and
/// not at 1,000 (500 / 4 x 20 ms = 2.5 s).
async fn availability_runs(dir: &Path) -> Vec<AvailabilityRun> {
    let mut config = StandInConfig::new(OrgSpec::new(SEED, 10_000));
    config.page_latency = Duration::from_millis(20);
    let standin = StandIn::start(config).await.unwrap();
    let mut settings = settings_for(&standin, dir.join("bench-availability.db"));
    settings.availability.enabled = true;
    settings.availability.rooms_per_request = 20;
    settings.availability.concurrency = 4;
    sync(&settings).await;
    println!();
    let mut runs = Vec::new();
    for (requests_per_second, rounds, waiting, limit) in [
        (1000.0, AVAILABILITY_ROUNDS, 2.5, 1.2),
        (20.0, SLOW_AVAILABILITY_ROUNDS, 25.0, 1.05),
    ] {
        settings.dingtalk.requests_per_second = requests_per_second;
        let best = best_refresh(&settings, rounds).await;
        let ratio = best.as_secs_f64() / waiting;
        println!(
            "availability refresh, 10000 rooms, 500 requests x 20 ms, 4 in flight, \
             {requests_per_second} req/s: {:.3}s against {waiting:.3}s of pure waiting = {ratio:.3}x",
            best.as_secs_f64()
        );
        runs.push(AvailabilityRun {
            requests_per_second,
            ratio,
            limit,
        });
    }
    standin.stop().await;
    runs
}

/// The best of `rounds` refreshes on a runner whose token is already fetched (with an untimed
/// group-list call), so only the refresh's own requests are timed.
async fn best_refresh(settings: &Settings, rounds: usize) -> Duration {
    let runner = Runner::new(settings.clone(), Metrics::new()).unwrap();
    let client = runner.api().client(Arc::new(|_| {}), Default::default());
    client.group_list().await.expect("token and group list");
    let refresh = || runner.refresh_once(Trigger::Manual, CancellationToken::new());
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let (report, t) = timed(refresh()).await;
        let report = report.unwrap();
        assert_eq!(report.status, RunStatus::Succeeded, "{report}");
        assert_eq!(report.checked.map(|c| c.rooms), Some(10_000));
        best = best.min(t);
    }
    best
}
