//! The fetch and the apply of one run, as two tasks joined by a short queue:
//!
//! - the fetcher requests pages, validates them and follows the cursor;
//! - the processor sorts each room with the run's ledger (unchanged rooms are not staged) and
//!   stages the rest.
//!
//! Processing one page overlaps fetching the next, and the mirror's fingerprints load while the
//! first pages arrive.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::SqlitePool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ledger::{fingerprint, Decision, Ledger};
use super::{report, store_failure, Progress, Stop, SyncOptions};
use crate::config::Settings;
use crate::dingtalk::{DingTalkClient, Group, Observer, Room};
use crate::failure::{codes, Failure, Stage};
use crate::store::apply::{apply, ApplyCounts, ApplyOutcome, ApplyRequest};
use crate::store::fingerprints::{active_rooms_with, load_mirror, stored_fingerprints};
use crate::store::staging::{StagedRecord, Staging};

/// Pages that may wait for the processor: bounds memory (about 1 MB per 10 pages), and lets
/// the fetcher go on while the processor loads the mirror's fingerprints at the start.
const PAGE_QUEUE: usize = 64;

/// What the processor builds from the listing.
struct Processed {
    staging: Staging,
    ledger: Ledger,
    labels: BTreeMap<i64, Option<String>>,
    groups: HashMap<i64, Group>,
}

pub(super) async fn fetch_and_apply(
    pool: &SqlitePool,
    settings: &Settings,
    options: SyncOptions,
    run_id: i64,
    observer: &Observer,
    progress: &mut Progress,
    shutdown: CancellationToken,
) -> Result<ApplyCounts, Stop> {
    let client = DingTalkClient::new(settings.dingtalk.clone(), observer.clone()).map_err(|e| {
        Stop::Failed(report(
            observer,
            Failure::new(Stage::Fetch, codes::CONNECTION, e.to_string()),
        ))
    })?;
    let conn = pool
        .acquire()
        .await
        .map_err(|e| store_failure(observer, "opening the staging connection", e))?;
    // Detached: the staging tables go with this connection, which never returns to the pool.
    let staging = Staging::new(conn.detach())
        .await
        .map_err(|e| store_failure(observer, "creating the staging tables", e))?;

    let started = std::time::Instant::now();
    let (pages, queue) = mpsc::channel(PAGE_QUEUE);
    let processor = tokio::spawn(process_pages(
        pool.clone(),
        staging,
        queue,
        observer.clone(),
    ));
    let mut listed_groups = Vec::new();
    let fetched = tokio::select! {
        fetched = fetch_listing(&client, pages, &mut listed_groups, observer, progress) => fetched,
        _ = shutdown.cancelled() => {
            tracing::warn!("shutdown requested: abandoning the fetch, nothing is applied");
            Err(Stop::Interrupted)
        }
    };
    // The queue's sender is gone: the processor finishes what it has and hands back.
    let fetch_ms = started.elapsed().as_millis() as u64;
    let processed = processor.await.expect("the page processor does not panic");
    let process_ms = started.elapsed().as_millis() as u64;
    let (result, staging) = match (fetched, processed) {
        (Err(stop), Ok(p)) => (Err(stop), Some(p.staging)),
        (Err(stop), Err((_, staging))) => (Err(stop), staging),
        (Ok(()), Err((stop, staging))) => (Err(stop), staging),
        (Ok(()), Ok(mut p)) => {
            // From here on the run is not interruptible: the apply completes or rolls back whole.
            // groupLists is the authority on the groups it lists; rooms add the groups it lacks.
            p.groups
                .extend(listed_groups.into_iter().map(|g| (g.group_id, g)));
            let result = match tally(pool, &p.ledger).await {
                Ok(tally) => {
                    progress.rooms_seen = Some(tally.seen);
                    let (pages, rooms) = (progress.pages, &tally);
                    apply_listing(&mut p, rooms, settings, options, run_id, pages, observer).await
                }
                Err(e) => Err(store_failure(observer, "reading the mirror", e)),
            };
            tracing::debug!(
                fetch_ms,
                process_ms,
                apply_ms = started.elapsed().as_millis() as u64 - process_ms,
                "listing fetched, staged and applied"
            );
            (result, Some(p.staging))
        }
    };
    if let Some(staging) = staging {
        if let Err(e) = staging.close().await {
            tracing::debug!(error = %e, "closing the staging connection failed");
        }
    }
    result
}

/// Fetches the group list, then every page of rooms, validating as it goes, and queues the
/// rooms. Never loops: a missing or repeated cursor fails the run. Returns early (Ok) when the
/// processor has stopped: its error is the run's.
async fn fetch_listing(
    client: &DingTalkClient,
    pages: mpsc::Sender<Vec<Room>>,
    groups: &mut Vec<Group>,
    observer: &Observer,
    progress: &mut Progress,
) -> Result<(), Stop> {
    let listed = client.group_list().await.map_err(Stop::Failed)?;
    *groups = listed
        .result
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            raw.validate()
                .map_err(|e| format!("groupLists result[{i}]: {e}"))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| {
            Stop::Failed(report(
                observer,
                Failure::new(Stage::Validate, codes::BAD_RESPONSE, e),
            ))
        })?;
    let mut followed: HashSet<i64> = HashSet::new();
    let mut next_token = None;
    for page in 0u32.. {
        let body = client
            .room_page(page, next_token)
            .await
            .map_err(Stop::Failed)?;
        progress.pages += 1;
        let invalid = |code: &str, message: String| {
            let failure = Failure::new(Stage::Validate, code, message).on_page(Some(page));
            Stop::Failed(report(observer, failure))
        };
        let rooms = body
            .result
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(i))
            .collect::<Result<Vec<Room>, String>>()
            .map_err(|e| invalid(codes::BAD_RESPONSE, e))?;
        tracing::debug!(page, rooms = rooms.len(), has_more = ?body.has_more, "page fetched");
        if pages.send(rooms).await.is_err() {
            return Ok(());
        }
        if body.has_more != Some(true) {
            return Ok(());
        }
        next_token = match body.next_token {
            None => {
                let message = "hasMore is true but no nextToken was given".to_string();
                return Err(invalid(codes::MISSING_NEXT_TOKEN, message));
            }
            Some(t) if !followed.insert(t) => {
                let message = format!(
                    "nextToken {t} was already followed in this run; stopping rather than looping"
                );
                return Err(invalid(codes::REPEATED_NEXT_TOKEN, message));
            }
            Some(t) => Some(t),
        };
    }
    unreachable!("the page loop only ends by returning")
}

/// Sorts each queued room with the ledger and stages what is new, changed or back. On error,
/// hands back the staging connection (if it still has it) with the run's stop.
async fn process_pages(
    pool: SqlitePool,
    mut staging: Staging,
    mut queue: mpsc::Receiver<Vec<Room>>,
    observer: Observer,
) -> Result<Processed, (Stop, Option<Staging>)> {
    let mirror = match load_mirror(&pool).await {
        Ok(known) => known,
        Err(e) => {
            return Err((
                store_failure(&observer, "reading the mirror", e),
                Some(staging),
            ))
        }
    };
    let mut ledger = Ledger::new(mirror);
    let mut labels: BTreeMap<i64, Option<String>> = BTreeMap::new();
    let mut groups: HashMap<i64, Group> = HashMap::new();
    let mut pending = Pending::default();
    let mut sort_time = std::time::Duration::ZERO;
    while let Some(rooms) = queue.recv().await {
        let t0 = std::time::Instant::now();
        for room in rooms {
            for label in &room.labels {
                // Later records win; compare first so the steady state allocates nothing.
                if labels.get(&label.label_id) != Some(&label.label_name) {
                    labels.insert(label.label_id, label.label_name.clone());
                }
            }
            if let Some(group) = &room.group {
                if groups.get(&group.group_id) != Some(group) {
                    groups.insert(group.group_id, group.clone());
                }
            }
            let fp = fingerprint(&room);
            let decision = ledger.observe(&room, fp);
            pending.sort(room, fp, decision);
        }
        sort_time += t0.elapsed();
        if pending.len() >= STAGE_BATCH {
            if let Err(e) = pending.flush(&mut staging).await {
                // Dropping the queue makes the fetcher stop at its next page.
                return Err((store_failure(&observer, "staging rooms", e), Some(staging)));
            }
        }
    }
    tracing::debug!(
        sort_ms = sort_time.as_millis() as u64,
        "listing sorted by the ledger"
    );
    if let Err(e) = pending.flush(&mut staging).await {
        return Err((store_failure(&observer, "staging rooms", e), Some(staging)));
    }
    Ok(Processed {
        staging,
        ledger,
        labels,
        groups,
    })
}

/// Rooms staged per round trip to the staging connection: batching pages keeps the round
/// trips, and the thread wake-ups each costs, ten times fewer than staging page by page.
const STAGE_BATCH: usize = 1000;

/// What the processor has sorted and not yet staged.
#[derive(Default)]
struct Pending {
    stage: Vec<StagedRecord>,
    /// Staged rooms whose earlier record, staged before, this batch replaces.
    again: Vec<String>,
    /// Staged rooms whose later record turned out unchanged: taken out of staging.
    unstage: Vec<String>,
}

impl Pending {
    fn len(&self) -> usize {
        self.stage.len() + self.unstage.len()
    }

    fn sort(&mut self, room: Room, fp: i64, decision: Decision) {
        match decision {
            Decision::Skip => {}
            Decision::Unstage => {
                // A record still pending simply goes; one already staged is taken out.
                self.stage.retain(|(r, _, _)| r.room_id != room.room_id);
                self.unstage.push(room.room_id);
            }
            Decision::Stage { change, again } => {
                if again {
                    self.again.push(room.room_id.clone());
                }
                self.stage.push((room, fp, change));
            }
        }
    }

    /// Unstages first: a room taken out and staged again within the batch ends up staged.
    async fn flush(&mut self, staging: &mut Staging) -> sqlx::Result<()> {
        if !self.unstage.is_empty() {
            staging.remove_rooms(&self.unstage).await?;
        }
        if !self.stage.is_empty() {
            staging.add_rooms(&self.stage, &self.again).await?;
        }
        self.stage.clear();
        self.again.clear();
        self.unstage.clear();
        Ok(())
    }
}

/// What the ledger's fingerprints leave to look up by id at the end of the fetch.
struct Tally {
    /// Distinct rooms in the listing.
    seen: u64,
    /// Active rooms the listing no longer has.
    missing: Vec<String>,
}

async fn tally(pool: &SqlitePool, ledger: &Ledger) -> sqlx::Result<Tally> {
    // A staged room that also came unchanged in another record is counted once.
    // None can be when no room came unchanged (always so into an empty mirror).
    let staged: Vec<&str> = if ledger.any_seen_unchanged() {
        ledger.staged().collect()
    } else {
        Vec::new()
    };
    let staged_and_unchanged = if staged.is_empty() {
        0
    } else {
        let stored = stored_fingerprints(pool, &staged).await?;
        stored
            .into_iter()
            .filter(|fp| ledger.seen_unchanged(*fp))
            .count() as u64
    };
    // An active room whose fingerprint did not come is gone, unless it changed (then it is
    // staged under its id).
    let unseen = ledger.unseen();
    let missing = if unseen.is_empty() && ledger.all_fingerprinted() {
        Vec::new()
    } else {
        let candidates = active_rooms_with(pool, &unseen).await?;
        candidates
            .into_iter()
            .filter(|id| !ledger.is_staged(id))
            .collect()
    };
    Ok(Tally {
        seen: ledger.seen(staged_and_unchanged),
        missing,
    })
}

async fn apply_listing(
    p: &mut Processed,
    tally: &Tally,
    settings: &Settings,
    options: SyncOptions,
    run_id: i64,
    pages_fetched: u32,
    observer: &Observer,
) -> Result<ApplyCounts, Stop> {
    let labels: Vec<(i64, Option<&str>)> = p
        .labels
        .iter()
        .map(|(id, name)| (*id, name.as_deref()))
        .collect();
    let groups: Vec<&Group> = p.groups.values().collect();
    let staged = async {
        p.staging.set_labels(&labels).await?;
        p.staging.set_groups(&groups).await?;
        let missing: Vec<&str> = tally.missing.iter().map(String::as_str).collect();
        p.staging.set_removed(&missing).await
    };
    staged
        .await
        .map_err(|e| store_failure(observer, "staging labels, groups and removals", e))?;
    let request = ApplyRequest {
        run_id,
        pages_fetched,
        rooms_seen: tally.seen,
        max_removal_ratio: settings.sync.max_removal_ratio,
        allow_mass_removal: options.allow_mass_removal,
        keep_changes_days: settings.sync.keep_changes_days,
    };
    match apply(&mut p.staging, &request).await {
        Ok(ApplyOutcome::Applied(counts)) => Ok(counts),
        Ok(ApplyOutcome::Guarded {
            would_remove,
            active,
            limit,
        }) => {
            let f = Failure::new(
                Stage::Store,
                codes::REMOVAL_GUARD,
                format!(
                    "the listing would remove {would_remove} of {active} active rooms, more than the limit of \
                     {limit:.0} (max(5, sync.max_removal_ratio x active)); nothing was changed. If this is \
                     intended, run once with --sync-now --allow-mass-removal"
                ),
            );
            Err(Stop::Failed(report(observer, f)))
        }
        Err(e) => Err(store_failure(observer, "applying the listing", e)),
    }
}
