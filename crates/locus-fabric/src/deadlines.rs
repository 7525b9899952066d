//! A queue of items by deadline, first-in-first-out among equal deadlines,
//! shared by the UDP driver (timers) and the simulator (timers and
//! datagrams in flight). The insertion counter makes the order total, so a
//! simulated run is the same every time.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Items ordered by deadline (µs), earliest first.
pub(crate) struct Deadlines<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Deadlines<T> {
    pub(crate) fn new() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Queue `item` for time `at`.
    pub(crate) fn push(&mut self, at: u64, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// The earliest deadline.
    pub(crate) fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Take the earliest item if its deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(u64, T)> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_in_insertion_order() {
        let mut q = Deadlines::new();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        assert_eq!(q.pop_due(0), None);
        assert_eq!(q.pop_due(5), Some((1, "a")));
        assert_eq!(q.pop_due(5), Some((5, "b")));
        assert_eq!(q.pop_due(5), Some((5, "c")));
        assert_eq!(q.next_at(), None);
    }
}
