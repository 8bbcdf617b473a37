//! Which source offsets are safe to commit: Kafka Connect 3.x `SubmittedRecords` semantics
//! (KAFKA-12226, kafka-connect.md §5.2).
//!
//! Records are submitted per source partition in poll order and acknowledged in any order (the
//! producer callback, or "dropped" for filtered/tolerated records). For each partition the
//! committable offset is the offset of the last record of the longest fully-acknowledged prefix;
//! [`SubmittedRecords::committable`] returns those offsets and forgets that prefix. An unacked
//! record holds back later offsets of its own partition only.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Handle of one submitted record, used to acknowledge or remove it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubmittedRecord<P> {
    partition: P,
    seq: u64,
}

impl<P> SubmittedRecord<P> {
    pub fn partition(&self) -> &P {
        &self.partition
    }
}

#[derive(Debug)]
struct Slot<O> {
    seq: u64,
    acked: bool,
    offset: O,
}

/// Offsets ready to commit, with the counts Connect logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittableOffsets<P, O> {
    /// The offset to commit per partition (partitions in first-submission order).
    pub offsets: Vec<(P, O)>,
    /// Records whose offsets these commits cover ("Committing offsets for N acknowledged
    /// messages").
    pub num_committable_messages: usize,
    /// Records still waiting for an acknowledgement.
    pub num_uncommittable_messages: usize,
}

impl<P, O> CommittableOffsets<P, O> {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

#[derive(Debug)]
pub struct SubmittedRecords<P, O> {
    records: HashMap<P, VecDeque<Slot<O>>>,
    order: Vec<P>,
    next_seq: u64,
    unacked: usize,
}

impl<P: Clone + Eq + Hash, O> Default for SubmittedRecords<P, O> {
    fn default() -> Self {
        SubmittedRecords {
            records: HashMap::new(),
            order: Vec::new(),
            next_seq: 0,
            unacked: 0,
        }
    }
}

impl<P: Clone + Eq + Hash, O> SubmittedRecords<P, O> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks a record about to be sent; keep the handle to acknowledge it.
    pub fn submit(&mut self, partition: P, offset: O) -> SubmittedRecord<P> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let deque = self.records.entry(partition.clone()).or_insert_with(|| {
            self.order.push(partition.clone());
            VecDeque::new()
        });
        deque.push_back(Slot {
            seq,
            acked: false,
            offset,
        });
        self.unacked += 1;
        SubmittedRecord { partition, seq }
    }

    fn slot_mut(&mut self, rec: &SubmittedRecord<P>) -> Option<&mut Slot<O>> {
        let deque = self.records.get_mut(&rec.partition)?;
        let i = deque.binary_search_by_key(&rec.seq, |s| s.seq).ok()?;
        deque.get_mut(i)
    }

    /// Marks a record acknowledged (sent and acked by Kafka, or dropped on purpose). Returns false
    /// if it was already acked or is unknown (e.g. its prefix was already committed).
    pub fn ack(&mut self, rec: &SubmittedRecord<P>) -> bool {
        match self.slot_mut(rec) {
            Some(slot) if !slot.acked => {
                slot.acked = true;
                self.unacked -= 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets a record that will never be sent (it will be re-submitted or was never handed to
    /// the producer), like Java's `removeLastOccurrence`. Returns whether it was tracked.
    pub fn remove(&mut self, rec: &SubmittedRecord<P>) -> bool {
        let Some(deque) = self.records.get_mut(&rec.partition) else {
            return false;
        };
        let Ok(i) = deque.binary_search_by_key(&rec.seq, |s| s.seq) else {
            return false;
        };
        let slot = deque.remove(i).expect("index from binary search");
        if !slot.acked {
            self.unacked -= 1;
        }
        if deque.is_empty() {
            self.records.remove(&rec.partition);
            self.order.retain(|p| *p != rec.partition);
        }
        true
    }

    /// Takes the committable offset of every partition whose oldest records are acked, removing
    /// those records.
    pub fn committable(&mut self) -> CommittableOffsets<P, O> {
        let mut offsets = Vec::new();
        let mut committed = 0;
        let mut emptied = Vec::new();
        for p in &self.order {
            let deque = self.records.get_mut(p).expect("order and records agree");
            let mut last = None;
            while deque.front().is_some_and(|s| s.acked) {
                last = deque.pop_front().map(|s| s.offset);
                committed += 1;
            }
            if let Some(o) = last {
                offsets.push((p.clone(), o));
            }
            if deque.is_empty() {
                emptied.push(p.clone());
            }
        }
        for p in emptied {
            self.records.remove(&p);
            self.order.retain(|x| *x != p);
        }
        CommittableOffsets {
            offsets,
            num_committable_messages: committed,
            num_uncommittable_messages: self.unacked,
        }
    }

    /// Records submitted and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Records still tracked (acked ones wait for [`SubmittedRecords::committable`]).
    pub fn tracked(&self) -> usize {
        self.records.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_acks_commit_the_last_offset() {
        let mut t = SubmittedRecords::new();
        let a = t.submit("p0", 1);
        let b = t.submit("p0", 2);
        assert!(t.committable().is_empty());
        assert!(t.ack(&a));
        assert!(t.ack(&b));
        let c = t.committable();
        assert_eq!(c.offsets, vec![("p0", 2)]);
        assert_eq!(c.num_committable_messages, 2);
        assert_eq!(c.num_uncommittable_messages, 0);
        assert!(t.committable().is_empty(), "the prefix is forgotten");
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn out_of_order_acks_wait_for_the_gap() {
        let mut t = SubmittedRecords::new();
        let r: Vec<_> = (1..=5).map(|o| t.submit("p0", o)).collect();
        t.ack(&r[1]);
        t.ack(&r[2]);
        t.ack(&r[4]);
        assert!(t.committable().is_empty(), "record 1 is not acked yet");
        assert_eq!(t.unacked(), 2);
        t.ack(&r[0]);
        let c = t.committable();
        assert_eq!(c.offsets, vec![("p0", 3)], "stops before unacked record 4");
        assert_eq!(c.num_committable_messages, 3);
        assert_eq!(c.num_uncommittable_messages, 1);
        t.ack(&r[3]);
        assert_eq!(t.committable().offsets, vec![("p0", 5)]);
        assert!(!t.ack(&r[3]), "already committed and forgotten");
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = SubmittedRecords::new();
        let a0 = t.submit("p0".to_string(), "10");
        let b0 = t.submit("p1".to_string(), "20");
        let a1 = t.submit("p0".to_string(), "11");
        let b1 = t.submit("p1".to_string(), "21");
        t.ack(&a1);
        t.ack(&b0);
        t.ack(&b1);
        let c = t.committable();
        assert_eq!(c.offsets, vec![("p1".to_string(), "21")]);
        assert_eq!(c.num_uncommittable_messages, 1);
        t.ack(&a0);
        assert_eq!(t.committable().offsets, vec![("p0".to_string(), "11")]);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn double_ack_and_removal() {
        let mut t = SubmittedRecords::new();
        let a = t.submit(0u32, 1u64);
        let b = t.submit(0u32, 2u64);
        let c = t.submit(0u32, 3u64);
        assert!(t.ack(&a));
        assert!(!t.ack(&a));
        assert_eq!(t.unacked(), 2);
        // b was never sent: forget it, so it does not block c.
        assert!(t.remove(&b));
        assert!(!t.remove(&b));
        t.ack(&c);
        assert_eq!(t.committable().offsets, vec![(0, 3)]);
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn many_records_random_ack_order() {
        let mut t = SubmittedRecords::new();
        let recs: Vec<_> = (0..1000u64).map(|i| t.submit(i % 4, i)).collect();
        // Ack in a scrambled but deterministic order; the committable offsets must never pass an
        // unacked record of the same partition.
        let mut order: Vec<usize> = (0..1000).collect();
        let mut x = 12345u64;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let mut acked = vec![false; 1000];
        let mut committed = [None::<u64>; 4];
        for (step, &i) in order.iter().enumerate() {
            t.ack(&recs[i]);
            acked[i] = true;
            if step % 37 == 0 || step == 999 {
                for (p, o) in t.committable().offsets {
                    committed[p as usize] = Some(o);
                }
                for p in 0..4u64 {
                    let first_unacked = (0..1000u64)
                        .filter(|r| r % 4 == p)
                        .find(|r| !acked[*r as usize]);
                    if let Some(o) = committed[p as usize] {
                        assert!(
                            first_unacked.is_none_or(|u| o < u),
                            "partition {p} committed {o} past {first_unacked:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(committed, [Some(996), Some(997), Some(998), Some(999)]);
        assert_eq!(t.tracked(), 0);
    }
}
