//! A shard link's outgoing queue: bounded, with the newest `Shadows` replacing any not yet
//! written (a shard needs only the latest set). A peer that stops reading fills the queue, and
//! the link is then closed rather than let replication's memory grow until it is OOM-killed.

use std::collections::VecDeque;
use std::sync::Mutex;

use sidereal_core::protocol::ReplicationMessage;
use tokio::sync::Notify;

/// Messages a link may have queued (besides the latest shadows) before it is closed as unable
/// to keep up. A split's or a rehome's burst of per-entity `Adopt`s for a crowded leaf fits.
pub const MAX_QUEUED_MESSAGES: usize = 65_536;

/// Why a link's writer gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxFailure {
    /// More than the queue's limit waited for the socket.
    Backlog,
    /// One write did not complete within the link timeout: the peer stopped reading.
    WriteStalled,
}

#[derive(Debug, Default)]
struct Queued {
    messages: VecDeque<ReplicationMessage>,
    /// The newest `Shadows` not yet written.
    shadows: Option<ReplicationMessage>,
    closed: bool,
    failed: Option<OutboxFailure>,
}

/// One link's queue, shared by whoever queues (the authority's flush) and its writer task.
#[derive(Debug)]
pub struct LinkOutbox {
    queued: Mutex<Queued>,
    limit: usize,
    /// Wakes the writer.
    ready: Notify,
    /// Wakes the link's reader when the writer failed, so the link closes at once.
    failure: Notify,
}

impl Default for LinkOutbox {
    fn default() -> Self {
        Self::with_limit(MAX_QUEUED_MESSAGES)
    }
}

impl LinkOutbox {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            queued: Mutex::new(Queued::default()),
            limit,
            ready: Notify::new(),
            failure: Notify::new(),
        }
    }

    /// Queues `msg`. Returns false (and fails the link) when the queue is full; a failed or
    /// closed link takes nothing more.
    pub fn push(&self, msg: ReplicationMessage) -> bool {
        let mut q = self.queued.lock().expect("outbox lock");
        if q.closed || q.failed.is_some() {
            return false;
        }
        if matches!(msg, ReplicationMessage::Shadows { .. }) {
            q.shadows = Some(msg);
        } else if q.messages.len() >= self.limit {
            q.failed = Some(OutboxFailure::Backlog);
            drop(q);
            self.failure.notify_one();
            return false;
        } else {
            q.messages.push_back(msg);
        }
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Everything queued, in order, the latest shadows last; waits while nothing is. `None`
    /// once the outbox is closed and drained, or failed.
    pub async fn next_batch(&self) -> Option<Vec<ReplicationMessage>> {
        loop {
            {
                let mut q = self.queued.lock().expect("outbox lock");
                if q.failed.is_some() {
                    return None;
                }
                let mut batch: Vec<ReplicationMessage> = q.messages.drain(..).collect();
                batch.extend(q.shadows.take());
                if !batch.is_empty() {
                    return Some(batch);
                }
                if q.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// No more messages: the writer sends what is queued (a `Rejected` reason) and stops.
    pub fn close(&self) {
        self.queued.lock().expect("outbox lock").closed = true;
        self.ready.notify_one();
    }

    /// The writer could not go on.
    pub fn fail(&self, why: OutboxFailure) {
        self.queued
            .lock()
            .expect("outbox lock")
            .failed
            .get_or_insert(why);
        self.failure.notify_one();
        self.ready.notify_one();
    }

    /// Resolves when the link's writer failed, with why.
    pub async fn failed(&self) -> OutboxFailure {
        loop {
            if let Some(f) = self.queued.lock().expect("outbox lock").failed {
                return f;
            }
            self.failure.notified().await;
        }
    }

    /// Messages waiting (not counting the latest shadows).
    pub fn len(&self) -> usize {
        self.queued.lock().expect("outbox lock").messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidereal_core::EntityId;

    fn forget(n: u64) -> ReplicationMessage {
        ReplicationMessage::Forget {
            ids: vec![EntityId(n)],
        }
    }

    fn shadows(tick: u64) -> ReplicationMessage {
        ReplicationMessage::Shadows {
            tick,
            shadows: vec![],
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shadows_replace_unsent_shadows_and_go_after_the_queued_messages() {
        let o = LinkOutbox::with_limit(10);
        for tick in 0..100 {
            assert!(o.push(shadows(tick)));
        }
        assert!(o.push(forget(1)));
        assert!(o.push(forget(2)));
        assert_eq!(
            o.next_batch().await.unwrap(),
            vec![forget(1), forget(2), shadows(99)]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_that_stops_reading_fills_the_queue_and_fails_the_link() {
        let o = LinkOutbox::with_limit(3);
        assert!(o.push(forget(1)) && o.push(forget(2)) && o.push(forget(3)));
        assert!(!o.push(forget(4)), "the fourth is refused");
        assert_eq!(o.failed().await, OutboxFailure::Backlog);
        assert_eq!(o.next_batch().await, None, "the writer stops");
        assert!(!o.push(forget(5)), "a failed link takes nothing more");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_outbox_drains_then_ends() {
        let o = LinkOutbox::default();
        o.push(forget(1));
        o.close();
        assert_eq!(o.next_batch().await, Some(vec![forget(1)]));
        assert_eq!(o.next_batch().await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_wakes_for_a_message_queued_while_it_waits() {
        let o = std::sync::Arc::new(LinkOutbox::default());
        let w = o.clone();
        let writer = tokio::spawn(async move { w.next_batch().await });
        tokio::task::yield_now().await;
        o.push(forget(7));
        assert_eq!(writer.await.unwrap(), Some(vec![forget(7)]));
    }
}
