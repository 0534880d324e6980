//! Fixed-capacity max-priority queue of downlink candidates (`heapless`, no allocation). A push
//! into a full queue returns the candidate to the caller inside the error, never panics.

use heapless::binary_heap::{BinaryHeap, Max};

/// An item waiting for the downlink: its priority `key` (expected value per byte) and its
/// index in the caller's list. Higher keys come first; equal keys, the lower index first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Priority (higher first); compared with `f32::total_cmp`.
    pub key: f32,
    /// Index of the item in the caller's list.
    pub index: usize,
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.key
            .total_cmp(&other.key)
            .then(other.index.cmp(&self.index))
    }
}

/// The queue was full: the candidate that did not fit, handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("candidate queue full at its capacity of {capacity}; item {} not queued", .candidate.index)]
pub struct QueueFull {
    /// The candidate that was offered.
    pub candidate: Candidate,
    /// The queue's capacity.
    pub capacity: usize,
}

/// At most `N` candidates, highest priority out first.
#[derive(Debug)]
pub struct CandidateQueue<const N: usize>(BinaryHeap<Candidate, Max, N>);

impl<const N: usize> Default for CandidateQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CandidateQueue<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self(BinaryHeap::new())
    }

    /// Queues `candidate`, or returns it inside [`QueueFull`] when `N` are already queued.
    pub fn push(&mut self, candidate: Candidate) -> Result<(), QueueFull> {
        self.0.push(candidate).map_err(|candidate| QueueFull {
            candidate,
            capacity: N,
        })
    }

    /// Removes and returns the highest-priority candidate.
    pub fn pop(&mut self) -> Option<Candidate> {
        self.0.pop()
    }

    /// The highest-priority candidate, left in place.
    pub fn peek(&self) -> Option<&Candidate> {
        self.0.peek()
    }

    /// Number of queued candidates.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_candidate_back_and_order_is_by_key_then_index() {
        let mut q: CandidateQueue<2> = CandidateQueue::new();
        assert!(q.is_empty());
        q.push(Candidate { key: 1.0, index: 0 })
            .expect("room in the queue");
        q.push(Candidate { key: 1.0, index: 3 })
            .expect("room in the queue");
        let extra = Candidate { key: 9.0, index: 7 };
        assert_eq!(
            q.push(extra),
            Err(QueueFull {
                candidate: extra,
                capacity: 2
            })
        );
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.pop().map(|c| c.index),
            Some(0),
            "equal keys: lower index first"
        );
        q.push(extra).expect("room in the queue");
        assert_eq!(q.peek().map(|c| c.index), Some(7));
        assert_eq!(q.pop().map(|c| c.index), Some(7));
        assert_eq!(q.pop().map(|c| c.index), Some(3));
        assert_eq!(q.pop(), None);
    }
}
