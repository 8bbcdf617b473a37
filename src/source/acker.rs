//! Acknowledgement bookkeeping of one hub partition (Connect's `SubmittedRecords`).
//!
//! Every event the receiver hands on is *submitted* in hub order and later *completed* with an
//! [`Outcome`], in any order (Kafka acknowledges records of different Kafka partitions
//! independently). Invariants:
//!
//! * the committable position is the position of the last record of the longest prefix of submitted
//!   records that are all finished (`Delivered` or `Skipped`): nothing after the first unfinished
//!   record is ever committed;
//! * a `Failed` record blocks the partition for good: neither it nor anything after it is ever
//!   committable (the task fails; a restart reads them again);
//! * a record without a position (an event without `x-opt-offset`, skipped as a record error)
//!   finishes its place in the prefix but never becomes a committed offset itself.

use std::collections::VecDeque;

/// Where an event is in its hub partition: its `x-opt-offset` (what toketi commits) and its
/// sequence number (for the lag and stall metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: String,
    pub seq: Option<i64>,
}

/// How a submitted record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Kafka acknowledged it.
    Delivered,
    /// A record error skipped under `errors.tolerance=all`: counts as done.
    Skipped,
    /// Failed for good: the task fails, nothing at or after it is committed.
    Failed,
}

/// Handle of one submitted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket as a number (carried through librdkafka's delivery opaque).
    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> Ticket {
        Ticket(raw)
    }
}

struct Entry {
    ticket: u64,
    position: Option<Position>,
    outcome: Option<Outcome>,
}

/// The state machine (see the module documentation).
#[derive(Default)]
pub struct Acker {
    queue: VecDeque<Entry>,
    next: u64,
    /// Last position of the finished prefix not yet taken by a commit.
    pending: Option<Position>,
    /// Finished records since the last take (what Connect logs as "acknowledged messages").
    finished: u64,
    blocked: bool,
}

impl Acker {
    pub fn new() -> Acker {
        Acker::default()
    }

    /// Submits the next record of the partition (hub order).
    pub fn submit(&mut self, position: Option<Position>) -> Ticket {
        let ticket = self.next;
        self.next += 1;
        self.queue.push_back(Entry {
            ticket,
            position,
            outcome: None,
        });
        Ticket(ticket)
    }

    fn entry(&mut self, ticket: Ticket) -> Option<&mut Entry> {
        // Tickets are consecutive: the entry's index is its distance from the front.
        let front = self.queue.front()?.ticket;
        let idx = ticket.0.checked_sub(front)?;
        self.queue.get_mut(idx as usize)
    }

    /// The position of a submitted, not yet removed record (for messages).
    pub fn position(&mut self, ticket: Ticket) -> Option<&Position> {
        self.entry(ticket)?.position.as_ref()
    }

    /// Completes a submitted record. Completing an unknown or already completed ticket does nothing.
    pub fn complete(&mut self, ticket: Ticket, outcome: Outcome) {
        let Some(e) = self.entry(ticket) else {
            return;
        };
        if e.outcome.is_none() {
            e.outcome = Some(outcome);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(e) = self.queue.front() {
            match e.outcome {
                None => return,
                Some(Outcome::Failed) => {
                    self.blocked = true;
                    return;
                }
                Some(_) => {
                    let e = self.queue.pop_front().expect("front exists");
                    if let Some(p) = e.position {
                        self.pending = Some(p);
                    }
                    self.finished += 1;
                }
            }
        }
    }

    /// Takes the committable position (and how many records finished since the last take).
    pub fn take(&mut self) -> Option<(Position, u64)> {
        let p = self.pending.take()?;
        let n = std::mem::take(&mut self.finished);
        Some((p, n))
    }

    /// Gives back what a failed commit took, unless a newer position arrived meanwhile.
    pub fn untake(&mut self, position: Position, finished: u64) {
        if self.pending.is_none() {
            self.pending = Some(position);
        }
        self.finished += finished;
    }

    /// Submitted records not yet finished (including a failed one and everything behind it).
    pub fn unfinished(&self) -> usize {
        self.queue.len()
    }

    /// True once a record failed for good.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(i: usize) -> Option<Position> {
        Some(Position {
            offset: (i * 10).to_string(),
            seq: Some(i as i64),
        })
    }

    #[test]
    fn commits_only_the_finished_prefix() {
        let mut a = Acker::new();
        let t: Vec<Ticket> = (0..4).map(|i| a.submit(pos(i))).collect();
        a.complete(t[1], Outcome::Delivered);
        assert_eq!(a.take(), None, "record 0 is still unfinished");
        a.complete(t[0], Outcome::Delivered);
        assert_eq!(a.take(), Some((pos(1).unwrap(), 2)));
        a.complete(t[3], Outcome::Delivered);
        a.complete(t[2], Outcome::Failed);
        assert_eq!(a.take(), None, "nothing at or after a failed record");
        assert!(a.is_blocked());
        assert_eq!(a.unfinished(), 2);
    }

    #[test]
    fn a_skipped_event_without_offset_is_never_the_committed_offset() {
        let mut a = Acker::new();
        let t0 = a.submit(pos(0));
        let t1 = a.submit(None);
        a.complete(t1, Outcome::Skipped);
        a.complete(t0, Outcome::Delivered);
        assert_eq!(a.take(), Some((pos(0).unwrap(), 2)));
        let t2 = a.submit(None);
        a.complete(t2, Outcome::Skipped);
        assert_eq!(a.take(), None, "an empty offset is never committed");
    }

    #[test]
    fn a_failed_commit_is_given_back_unless_newer_arrived() {
        let mut a = Acker::new();
        let t0 = a.submit(pos(0));
        a.complete(t0, Outcome::Delivered);
        let (p, n) = a.take().unwrap();
        a.untake(p.clone(), n);
        assert_eq!(a.take(), Some((p.clone(), 1)));
        let t1 = a.submit(pos(1));
        a.complete(t1, Outcome::Delivered);
        a.untake(p, 1);
        assert_eq!(a.take(), Some((pos(1).unwrap(), 2)));
    }

    /// One step of a run: submit a record (with or without a position), complete the `k`-th oldest
    /// unfinished record, or commit.
    #[derive(Clone, Debug)]
    enum Op {
        Submit { with_position: bool },
        Complete { pick: usize, outcome: Outcome },
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Submit { with_position: true }),
            1 => Just(Op::Submit { with_position: false }),
            4 => (any::<usize>(), prop_oneof![
                8 => Just(Outcome::Delivered),
                2 => Just(Outcome::Skipped),
                1 => Just(Outcome::Failed),
            ])
                .prop_map(|(pick, outcome)| Op::Complete { pick, outcome }),
            2 => Just(Op::Commit),
        ]
    }

    proptest! {
        /// Against a simple model (a vector of outcomes in hub order): every committed position is
        /// the last positioned record of the finished prefix, never at or past the first
        /// unfinished or failed record, and committed positions only move forward.
        #[test]
        fn never_commits_past_the_first_unfinished_record(ops in proptest::collection::vec(op(), 0..200)) {
            let mut a = Acker::new();
            // Model: per submitted record, its position index (if any) and outcome.
            let mut model: Vec<(Option<usize>, Option<Outcome>)> = Vec::new();
            let mut tickets: Vec<Ticket> = Vec::new();
            let mut last_committed: Option<usize> = None;
            for op in ops {
                match op {
                    Op::Submit { with_position } => {
                        let i = model.len();
                        tickets.push(a.submit(if with_position { pos(i) } else { None }));
                        model.push((with_position.then_some(i), None));
                    }
                    Op::Complete { pick, outcome } => {
                        let open: Vec<usize> = (0..model.len()).filter(|&i| model[i].1.is_none()).collect();
                        if open.is_empty() { continue; }
                        let i = open[pick % open.len()];
                        model[i].1 = Some(outcome);
                        a.complete(tickets[i], outcome);
                    }
                    Op::Commit => {
                        // Model: the finished prefix ends before the first unfinished/failed record.
                        let end = model.iter().position(|(_, o)| matches!(o, None | Some(Outcome::Failed))).unwrap_or(model.len());
                        let want = model[..end].iter().rev().find_map(|(p, _)| *p);
                        let got = a.take().map(|(p, _)| p.seq.unwrap() as usize);
                        match got {
                            Some(g) => {
                                prop_assert!(g < end, "committed {g} at/after the first unfinished {end}");
                                prop_assert_eq!(Some(g), want);
                                prop_assert!(last_committed.is_none_or(|l| g > l), "commits move forward");
                                last_committed = Some(g);
                            }
                            // Nothing new: the model's answer was already committed (or none).
                            None => prop_assert_eq!(want, last_committed),
                        }
                    }
                }
            }
        }
    }
}
