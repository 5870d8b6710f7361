//! Admission in front of a deployment (or a group) with a concurrency limit: who starts next.
//!
//! A request that cannot start at once waits in a bounded queue instead of failing. The order:
//!
//! - **Priority first**: a lower number starts first (0 = interactive). A waiter of a lower
//!   priority that has waited longer than `starvation_ms` is served as if it were of the top
//!   priority, so no class starves behind a steady stream of urgent requests.
//! - **Fair between tenants within a priority**: round robin over the tenants (keys, teams)
//!   that have waiters, one request each turn, so a tenant that queued 100 requests cannot hold
//!   back one that queued 2 (deficit round robin with a unit cost per request).
//! - **FIFO within a tenant.**
//!
//! The queue only decides; the caller owns the waiting (an asyncio future per ticket, woken when
//! `release` names its ticket). Every method is O(number of priorities + tenants of one class),
//! under one short lock.

use std::collections::{BTreeMap, HashMap, VecDeque};

use parking_lot::Mutex;

/// What `acquire` decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It may start now (it holds one of the `limit` slots until `release`).
    Start,
    /// It waits with this ticket until `release` returns it, or until `cancel`.
    Wait(u64),
    /// The queue is full: refuse it (429 with Retry-After).
    Full,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    enqueued_ms: u64,
}

/// The waiters of one priority: a FIFO per tenant, tenants visited in round robin.
#[derive(Debug, Default)]
struct Class {
    tenants: HashMap<String, VecDeque<Waiter>>,
    // The tenants with waiters, in the order they get their next turn.
    turn: VecDeque<String>,
}

impl Class {
    fn push(&mut self, tenant: &str, waiter: Waiter) {
        match self.tenants.get_mut(tenant) {
            Some(queue) => queue.push_back(waiter),
            None => {
                self.tenants
                    .insert(tenant.to_owned(), VecDeque::from([waiter]));
                self.turn.push_back(tenant.to_owned());
            }
        }
    }

    /// The oldest waiter's enqueue time (the heads are each tenant's oldest).
    fn oldest_ms(&self) -> Option<u64> {
        self.tenants
            .values()
            .filter_map(|q| q.front())
            .map(|w| w.enqueued_ms)
            .min()
    }

    /// The next tenant's next waiter; that tenant goes to the back of the turn order.
    fn pop_fair(&mut self) -> Option<Waiter> {
        let tenant = self.turn.pop_front()?;
        let queue = self.tenants.get_mut(&tenant)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.tenants.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        waiter
    }

    /// The oldest waiter of any tenant (used when it has starved).
    fn pop_oldest(&mut self) -> Option<Waiter> {
        let tenant = self
            .tenants
            .iter()
            .filter_map(|(t, q)| q.front().map(|w| (w.enqueued_ms, w.ticket, t)))
            .min()
            .map(|(_, _, t)| t.clone())?;
        let queue = self.tenants.get_mut(&tenant)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.tenants.remove(&tenant);
            self.turn.retain(|t| t != &tenant);
        }
        waiter
    }

    fn remove(&mut self, ticket: u64) -> bool {
        let Some(tenant) = self
            .tenants
            .iter()
            .find(|(_, q)| q.iter().any(|w| w.ticket == ticket))
            .map(|(t, _)| t.clone())
        else {
            return false;
        };
        let queue = self.tenants.get_mut(&tenant).expect("found above");
        queue.retain(|w| w.ticket != ticket);
        if queue.is_empty() {
            self.tenants.remove(&tenant);
            self.turn.retain(|t| t != &tenant);
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[derive(Debug)]
struct State {
    limit: usize,
    max_queue: usize,
    starvation_ms: u64,
    running: usize,
    waiting: usize,
    next_ticket: u64,
    classes: BTreeMap<u32, Class>,
}

impl State {
    fn pop_next(&mut self, now_ms: u64) -> Option<Waiter> {
        // A starved waiter of a lower class goes first, oldest first.
        let starved = self
            .classes
            .iter()
            .skip(1)
            .filter_map(|(p, c)| c.oldest_ms().map(|t| (t, *p)))
            .filter(|(t, _)| now_ms.saturating_sub(*t) >= self.starvation_ms)
            .min();
        let priority = match starved {
            Some((_, p)) => p,
            None => *self.classes.keys().next()?,
        };
        let class = self.classes.get_mut(&priority)?;
        let waiter = if starved.is_some() {
            class.pop_oldest()
        } else {
            class.pop_fair()
        };
        if class.is_empty() {
            self.classes.remove(&priority);
        }
        waiter
    }
}

/// A concurrency limit with a bounded, prioritised, fair waiting queue.
#[derive(Debug)]
pub struct FairQueue {
    state: Mutex<State>,
}

impl FairQueue {
    /// `limit` requests run at once; up to `max_queue` wait; a waiter of a lower priority is
    /// served first once it has waited `starvation_ms`.
    pub fn new(limit: usize, max_queue: usize, starvation_ms: u64) -> FairQueue {
        FairQueue {
            state: Mutex::new(State {
                limit: limit.max(1),
                max_queue,
                starvation_ms,
                running: 0,
                waiting: 0,
                next_ticket: 1,
                classes: BTreeMap::new(),
            }),
        }
    }

    /// Start now, wait with a ticket, or refuse when the queue is full. A request never
    /// overtakes waiters: it starts at once only when nobody waits.
    pub fn acquire(&self, tenant: &str, priority: u32, now_ms: u64) -> Admission {
        let mut s = self.state.lock();
        if s.running < s.limit && s.waiting == 0 {
            s.running += 1;
            return Admission::Start;
        }
        if s.waiting >= s.max_queue {
            return Admission::Full;
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.waiting += 1;
        let waiter = Waiter {
            ticket,
            enqueued_ms: now_ms,
        };
        s.classes.entry(priority).or_default().push(tenant, waiter);
        Admission::Wait(ticket)
    }

    /// A running request finished: the ticket that takes its slot, if anyone waits (the caller
    /// wakes that waiter; the slot is already counted as its own).
    pub fn release(&self, now_ms: u64) -> Option<u64> {
        let mut s = self.state.lock();
        s.running = s.running.saturating_sub(1);
        if s.running >= s.limit {
            return None; // the limit was lowered: let the surplus drain first
        }
        let waiter = s.pop_next(now_ms)?;
        s.waiting -= 1;
        s.running += 1;
        Some(waiter.ticket)
    }

    /// A waiter gave up (deadline, disconnect). False when the ticket is not waiting any more:
    /// `release` already handed it a slot, which the caller must then release.
    pub fn cancel(&self, ticket: u64) -> bool {
        let mut s = self.state.lock();
        let mut emptied = None;
        let mut found = false;
        for (priority, class) in s.classes.iter_mut() {
            if class.remove(ticket) {
                found = true;
                if class.is_empty() {
                    emptied = Some(*priority);
                }
                break;
            }
        }
        if let Some(priority) = emptied {
            s.classes.remove(&priority);
        }
        if found {
            s.waiting -= 1;
        }
        found
    }

    /// Change the concurrency limit (a config reload); running requests are not interrupted.
    pub fn set_limit(&self, limit: usize) {
        self.state.lock().limit = limit.max(1);
    }

    /// (running, waiting).
    pub fn load(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.running, s.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(a: Admission) -> u64 {
        match a {
            Admission::Wait(t) => t,
            other => panic!("expected a ticket, got {other:?}"),
        }
    }

    #[test]
    fn starts_until_the_limit_then_queues_then_refuses() {
        let q = FairQueue::new(2, 1, 10_000);
        assert_eq!(q.acquire("a", 1, 0), Admission::Start);
        assert_eq!(q.acquire("a", 1, 0), Admission::Start);
        let t = ticket(q.acquire("a", 1, 0));
        assert_eq!(q.acquire("a", 1, 0), Admission::Full);
        assert_eq!(q.load(), (2, 1));
        assert_eq!(q.release(1), Some(t));
        assert_eq!(q.load(), (2, 0));
        assert_eq!(q.release(2), None);
        assert_eq!(q.release(3), None);
        assert_eq!(q.load(), (0, 0));
    }

    #[test]
    fn interactive_overtakes_queued_batch() {
        let q = FairQueue::new(1, 100, 60_000);
        assert_eq!(q.acquire("a", 1, 0), Admission::Start);
        let batch: Vec<u64> = (0..5).map(|_| ticket(q.acquire("a", 1, 0))).collect();
        let urgent = ticket(q.acquire("b", 0, 1));
        assert_eq!(q.release(2), Some(urgent));
        for expected in batch {
            assert_eq!(q.release(3), Some(expected));
        }
    }

    #[test]
    fn tenants_of_one_priority_take_turns() {
        let q = FairQueue::new(1, 100, 60_000);
        assert_eq!(q.acquire("x", 1, 0), Admission::Start);
        let a: Vec<u64> = (0..6).map(|_| ticket(q.acquire("a", 1, 0))).collect();
        let b: Vec<u64> = (0..2).map(|_| ticket(q.acquire("b", 1, 0))).collect();
        let order: Vec<u64> = (0..8).map(|i| q.release(i).unwrap()).collect();
        assert_eq!(&order[..4], &[a[0], b[0], a[1], b[1]]);
        assert_eq!(&order[4..], &a[2..]);
    }

    #[test]
    fn a_starved_low_priority_waiter_goes_first() {
        let q = FairQueue::new(1, 100, 1_000);
        assert_eq!(q.acquire("x", 0, 0), Admission::Start);
        let old_batch = ticket(q.acquire("a", 5, 0));
        let urgent = ticket(q.acquire("b", 0, 900));
        // At 500 ms the batch request has not starved yet: the urgent one goes first.
        assert_eq!(q.release(500), Some(urgent));
        let urgent2 = ticket(q.acquire("b", 0, 600));
        // At 1000 ms it has: it goes before the newer urgent request.
        assert_eq!(q.release(1_000), Some(old_batch));
        assert_eq!(q.release(1_001), Some(urgent2));
    }

    #[test]
    fn cancel_removes_a_waiter_and_reports_a_handed_slot() {
        let q = FairQueue::new(1, 10, 60_000);
        assert_eq!(q.acquire("a", 1, 0), Admission::Start);
        let gone = ticket(q.acquire("a", 1, 0));
        let kept = ticket(q.acquire("b", 1, 0));
        assert!(q.cancel(gone));
        assert!(!q.cancel(gone));
        assert_eq!(q.load(), (1, 1));
        assert_eq!(q.release(1), Some(kept));
        assert!(
            !q.cancel(kept),
            "it holds a slot now: the caller releases it"
        );
    }

    #[test]
    fn a_newcomer_never_overtakes_waiters() {
        let q = FairQueue::new(1, 10, 60_000);
        assert_eq!(q.acquire("a", 1, 0), Admission::Start);
        let waiting = ticket(q.acquire("a", 1, 0));
        assert_eq!(q.release(1), Some(waiting));
        // The slot went to the waiter; a newcomer queues.
        let _ = ticket(q.acquire("c", 0, 2));
    }

    proptest::proptest! {
        /// Under any sequence of operations the counts stay consistent and the limit holds.
        #[test]
        fn counts_stay_consistent(ops in proptest::collection::vec((0u8..4, 0u32..3, 0u8..4), 1..200)) {
            let q = FairQueue::new(3, 8, 50);
            let mut running = 0usize;
            let mut waiting: Vec<u64> = Vec::new();
            for (step, (op, priority, tenant)) in ops.into_iter().enumerate() {
                let now = step as u64 * 10;
                match op {
                    0 | 1 => match q.acquire(&format!("t{tenant}"), priority, now) {
                        Admission::Start => running += 1,
                        Admission::Wait(t) => waiting.push(t),
                        Admission::Full => proptest::prop_assert_eq!(waiting.len(), 8),
                    },
                    2 if running > 0 => {
                        running -= 1;
                        if let Some(t) = q.release(now) {
                            let at = waiting.iter().position(|w| *w == t).unwrap();
                            waiting.remove(at);
                            running += 1;
                        }
                    }
                    3 if !waiting.is_empty() => {
                        let t = waiting.remove(0);
                        proptest::prop_assert!(q.cancel(t));
                    }
                    _ => {}
                }
                proptest::prop_assert!(running <= 3);
                proptest::prop_assert_eq!(q.load(), (running, waiting.len()));
                if running < 3 {
                    proptest::prop_assert!(waiting.is_empty(), "a free slot with waiters");
                }
            }
        }
    }
}
