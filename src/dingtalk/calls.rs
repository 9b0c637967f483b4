//! The requests one run sent, shared between its client and whoever records them: the run's
//! end, its periodic flushes and, after a panic, the safety net that records the run failed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Requests by endpoint path.
pub type CallCounts = BTreeMap<&'static str, u64>;

/// Requests sent and requests already recorded, by endpoint. Clones share the counts.
#[derive(Clone, Default)]
pub struct CallTally(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    sent: CallCounts,
    recorded: CallCounts,
}

impl CallTally {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them: plain additions.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request to `endpoint` went out.
    pub fn count(&self, endpoint: &'static str) {
        *self.counts().sent.entry(endpoint).or_default() += 1;
    }

    /// Every request sent so far.
    pub fn sent(&self) -> CallCounts {
        self.counts().sent.clone()
    }

    /// The requests sent and not yet recorded.
    pub fn unrecorded(&self) -> CallCounts {
        let counts = self.counts();
        counts
            .sent
            .iter()
            .filter_map(|(endpoint, sent)| {
                let done = counts.recorded.get(endpoint).copied().unwrap_or(0);
                (*sent > done).then_some((*endpoint, sent - done))
            })
            .collect()
    }

    /// `calls` (from [`CallTally::unrecorded`]) are now in the database.
    pub fn mark_recorded(&self, calls: &CallCounts) {
        let mut counts = self.counts();
        for (endpoint, n) in calls {
            *counts.recorded.entry(endpoint).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_not_recorded_is_pending() {
        let tally = CallTally::default();
        let client_side = tally.clone();
        client_side.count("/a");
        client_side.count("/a");
        client_side.count("/b");
        let pending = tally.unrecorded();
        assert_eq!(pending, CallCounts::from([("/a", 2), ("/b", 1)]));
        tally.mark_recorded(&pending);
        assert!(tally.unrecorded().is_empty());
        client_side.count("/a");
        assert_eq!(tally.unrecorded(), CallCounts::from([("/a", 1)]));
        assert_eq!(tally.sent(), CallCounts::from([("/a", 3), ("/b", 1)]));
    }
}
