//! Per-partition commit tracking for the sink: a partition's committable offset is one past the
//! longest prefix of its consumed records that are finished (accepted or dead-lettered).
//!
//! Each assignment of a partition gets a new generation; completions that arrive for an older
//! generation (the partition was revoked or lost meanwhile) are ignored, so a late completion can
//! never move a re-assigned partition's commit point.

use std::collections::{HashMap, VecDeque};

pub type TopicPartition = (String, i32);

#[derive(Debug)]
struct Part {
    generation: u64,
    /// Consumed records in offset order: (offset, finished).
    records: VecDeque<(i64, bool)>,
    /// Next offset to commit (one past the last finished prefix record), if any progress.
    done_upto: Option<i64>,
    /// What was last handed out for committing.
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<TopicPartition, Part>,
    next_generation: u64,
    in_flight: usize,
}

impl Tracker {
    /// Starts a fresh generation for a (newly assigned) partition, forgetting older bookkeeping.
    pub fn assign(&mut self, tp: TopicPartition) -> u64 {
        self.drop_partition(&tp);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.parts.insert(
            tp,
            Part {
                generation,
                records: VecDeque::new(),
                done_upto: None,
                committed: None,
            },
        );
        generation
    }

    /// Forgets a partition (revoked or lost): its unfinished records no longer count.
    pub fn drop_partition(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.parts.remove(tp) {
            self.in_flight -= p.records.iter().filter(|(_, done)| !done).count();
        }
    }

    /// Records a consumed record; returns the generation to quote when finishing it.
    pub fn submit(&mut self, tp: &TopicPartition, offset: i64) -> u64 {
        if !self.parts.contains_key(tp) {
            self.assign(tp.clone());
        }
        let p = self.parts.get_mut(tp).expect("assigned above");
        p.records.push_back((offset, false));
        self.in_flight += 1;
        p.generation
    }

    /// Marks a record finished. False when its partition generation is gone (ignored).
    pub fn finish(&mut self, tp: &TopicPartition, generation: u64, offset: i64) -> bool {
        let Some(p) = self.parts.get_mut(tp) else {
            return false;
        };
        if p.generation != generation {
            return false;
        }
        let Ok(i) = p.records.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        if p.records[i].1 {
            return false;
        }
        p.records[i].1 = true;
        self.in_flight -= 1;
        while let Some(&(o, true)) = p.records.front() {
            p.done_upto = Some(o + 1);
            p.records.pop_front();
        }
        true
    }

    /// Offsets (next offset to read) that moved since the last call, or all known ones with
    /// `all`; only for partitions accepted by `filter`.
    pub fn committable(
        &mut self,
        all: bool,
        filter: impl Fn(&TopicPartition) -> bool,
    ) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            if !filter(tp) {
                continue;
            }
            if let Some(n) = p.done_upto {
                if all || p.committed != Some(n) {
                    p.committed = Some(n);
                    out.push((tp.clone(), n));
                }
            }
        }
        out.sort();
        out
    }

    /// Records consumed and not finished, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether a partition is currently tracked.
    pub fn has(&self, tp: &TopicPartition) -> bool {
        self.parts.contains_key(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".into(), p)
    }

    #[test]
    fn only_finished_prefix_is_committable() {
        let mut t = Tracker::default();
        let g = t.submit(&tp(0), 10);
        t.submit(&tp(0), 11);
        t.submit(&tp(0), 12);
        let g1 = t.submit(&tp(1), 5);
        assert!(t.committable(false, |_| true).is_empty());
        assert!(t.finish(&tp(0), g, 11));
        assert!(t.committable(false, |_| true).is_empty());
        assert!(t.finish(&tp(0), g, 10));
        assert_eq!(t.committable(false, |_| true), vec![(tp(0), 12)]);
        // unchanged: nothing new, unless all
        assert!(t.committable(false, |_| true).is_empty());
        assert_eq!(t.committable(true, |_| true), vec![(tp(0), 12)]);
        assert!(t.finish(&tp(1), g1, 5));
        assert!(t.finish(&tp(0), g, 12));
        assert_eq!(
            t.committable(false, |_| true),
            vec![(tp(0), 13), (tp(1), 6)]
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn old_generation_is_ignored_after_reassignment() {
        let mut t = Tracker::default();
        let g = t.submit(&tp(0), 1);
        assert_eq!(t.in_flight(), 1);
        let g2 = t.assign(tp(0));
        assert_ne!(g, g2);
        assert_eq!(t.in_flight(), 0);
        assert!(!t.finish(&tp(0), g, 1));
        assert!(t.committable(true, |_| true).is_empty());
        t.drop_partition(&tp(0));
        assert!(!t.has(&tp(0)));
        assert!(!t.finish(&tp(0), g2, 1));
    }

    #[test]
    fn finishing_twice_counts_once() {
        let mut t = Tracker::default();
        let g = t.submit(&tp(0), 1);
        t.submit(&tp(0), 2);
        assert!(t.finish(&tp(0), g, 2));
        assert!(!t.finish(&tp(0), g, 2));
        assert_eq!(t.in_flight(), 1);
    }
}
