//! The queue between a run's fetcher and its processor, bounded by pages and by bytes: pages
//! whose records carry long texts (a page may be up to `dingtalk.max_response_bytes`) cannot
//! pile up in memory while the processor is busy.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::dingtalk::Room;

/// A page in the queue, holding its share of the byte bound until the processor drops it.
pub(super) struct QueuedPage {
    pub(super) rooms: Vec<Room>,
    _bytes: OwnedSemaphorePermit,
}

/// The fetcher's end.
pub(super) struct PageSender {
    pages: mpsc::Sender<QueuedPage>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

/// The processor is gone: the run is stopping.
#[derive(Debug)]
pub(super) struct Closed;

/// A queue of at most `pages` pages and about `max_bytes` bytes of rooms (a single page larger
/// than that goes alone).
pub(super) fn page_queue(
    pages: usize,
    max_bytes: usize,
) -> (PageSender, mpsc::Receiver<QueuedPage>) {
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let (tx, rx) = mpsc::channel(pages);
    let sender = PageSender {
        pages: tx,
        bytes: Arc::new(Semaphore::new(max_bytes)),
        max_bytes,
    };
    (sender, rx)
}

impl PageSender {
    /// Waits for room in the queue, then queues `rooms`.
    pub(super) async fn send(&self, rooms: Vec<Room>) -> Result<(), Closed> {
        let size: usize = rooms.iter().map(Room::approx_bytes).sum();
        let permits = size.clamp(1, self.max_bytes) as u32;
        let held = tokio::select! {
            held = self.bytes.clone().acquire_many_owned(permits) => held.map_err(|_| Closed)?,
            // The processor stopped while this page waited for room.
            () = self.pages.closed() => return Err(Closed),
        };
        let page = QueuedPage {
            rooms,
            _bytes: held,
        };
        self.pages.send(page).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rooms(n: usize, name_len: usize) -> Vec<Room> {
        (0..n)
            .map(|i| Room {
                room_id: format!("r{i}"),
                room_name: Some("x".repeat(name_len)),
                ..Room::default()
            })
            .collect()
    }

    async fn sends(sender: &PageSender, page: Vec<Room>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), sender.send(page))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_bytes_in_the_queue_are_bounded_and_freed_as_pages_are_processed() {
        let (sender, mut queue) = page_queue(64, 1_000_000);
        // Two pages of about 400 kB fit; a third waits until the processor takes one.
        assert!(sends(&sender, rooms(4, 100_000)).await);
        assert!(sends(&sender, rooms(4, 100_000)).await);
        assert!(!sends(&sender, rooms(4, 100_000)).await);
        let first = queue.recv().await.unwrap();
        assert!(!sends(&sender, rooms(4, 100_000)).await, "still held");
        drop(first);
        assert!(sends(&sender, rooms(4, 100_000)).await);
    }

    #[tokio::test]
    async fn a_page_larger_than_the_bound_goes_alone_and_small_pages_by_count() {
        let (sender, mut queue) = page_queue(2, 1_000_000);
        assert!(sends(&sender, rooms(30, 100_000)).await);
        assert!(!sends(&sender, rooms(1, 10)).await);
        drop(queue.recv().await.unwrap());
        assert!(sends(&sender, rooms(1, 10)).await);
        assert!(sends(&sender, rooms(1, 10)).await);
        assert!(!sends(&sender, rooms(1, 10)).await, "two pages at most");
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_stops_when_the_processor_is_gone() {
        let (sender, queue) = page_queue(64, 1_000);
        assert!(sends(&sender, rooms(1, 2_000)).await);
        drop(queue);
        let waited = tokio::time::timeout(Duration::from_secs(5), sender.send(rooms(1, 10)));
        assert!(matches!(waited.await, Ok(Err(Closed))));
    }
}
