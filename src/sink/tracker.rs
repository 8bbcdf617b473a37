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

    mod model {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Clone, Debug)]
        enum Op {
            /// Consume the next offset of partition p.
            Submit(i32),
            /// Finish the i-th oldest unfinished record of partition p (if any).
            Finish(i32, usize),
            /// A completion for an old generation (ignored).
            FinishStale(i32),
            /// Revoke and re-assign partition p.
            Reassign(i32),
            Commit(bool),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0i32..3).prop_map(Op::Submit),
                4 => ((0i32..3), 0usize..4).prop_map(|(p, i)| Op::Finish(p, i)),
                1 => (0i32..3).prop_map(Op::FinishStale),
                1 => (0i32..3).prop_map(Op::Reassign),
                2 => any::<bool>().prop_map(Op::Commit),
            ]
        }

        /// The model of one partition: records in offset order with a finished flag.
        #[derive(Default)]
        struct ModelPart {
            records: Vec<(i64, bool)>,
            next: i64,
            generation: u64,
            old_generations: Vec<(u64, i64)>,
            /// Highest offset ever handed out for committing.
            committed: Option<i64>,
        }

        proptest! {
            /// Against a simple model: never commits past the first unfinished record, commits
            /// move forward, in-flight counts agree, stale completions change nothing.
            #[test]
            fn tracker_matches_model(ops in proptest::collection::vec(op(), 1..300)) {
                let mut t = Tracker::default();
                let mut m: BTreeMap<i32, ModelPart> = BTreeMap::new();
                let tp = |p: i32| ("t".to_string(), p);
                for p in 0..3 {
                    let g = t.assign(tp(p));
                    m.insert(p, ModelPart { generation: g, ..Default::default() });
                }
                for op in ops {
                    match op {
                        Op::Submit(p) => {
                            let mp = m.get_mut(&p).unwrap();
                            let g = t.submit(&tp(p), mp.next);
                            prop_assert_eq!(g, mp.generation);
                            mp.records.push((mp.next, false));
                            mp.next += 1;
                        }
                        Op::Finish(p, i) => {
                            let mp = m.get_mut(&p).unwrap();
                            let unfinished: Vec<i64> = mp.records.iter().filter(|r| !r.1).map(|r| r.0).collect();
                            if let Some(&o) = unfinished.get(i) {
                                prop_assert!(t.finish(&tp(p), mp.generation, o));
                                mp.records.iter_mut().find(|r| r.0 == o).unwrap().1 = true;
                                prop_assert!(!t.finish(&tp(p), mp.generation, o), "twice");
                            }
                        }
                        Op::FinishStale(p) => {
                            let mp = m.get_mut(&p).unwrap();
                            if let Some(&(g, o)) = mp.old_generations.last() {
                                prop_assert!(!t.finish(&tp(p), g, o));
                            }
                        }
                        Op::Reassign(p) => {
                            let mp = m.get_mut(&p).unwrap();
                            if let Some(&(o, false)) = mp.records.iter().find(|r| !r.1) {
                                mp.old_generations.push((mp.generation, o));
                            }
                            t.drop_partition(&tp(p));
                            let g = t.assign(tp(p));
                            // Re-read from the committed point, as Kafka would.
                            mp.next = mp.committed.unwrap_or(0);
                            mp.records.clear();
                            mp.generation = g;
                        }
                        Op::Commit(all) => {
                            for ((_, p), off) in t.committable(all, |_| true) {
                                let mp = m.get_mut(&p).unwrap();
                                let first_unfinished = mp.records.iter().find(|r| !r.1).map(|r| r.0).unwrap_or(mp.next);
                                prop_assert!(off <= first_unfinished, "commit {off} past unfinished {first_unfinished}");
                                if let Some(c) = mp.committed {
                                    prop_assert!(off >= c, "commit went back from {c} to {off}");
                                }
                                mp.committed = Some(off);
                            }
                        }
                    }
                    let unfinished: usize = m.values().map(|mp| mp.records.iter().filter(|r| !r.1).count()).sum();
                    prop_assert_eq!(t.in_flight(), unfinished);
                }
            }
        }
    }
}
