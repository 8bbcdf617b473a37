//! Per-device queues of the C2D driver: pure bookkeeping, no I/O, time passed in.
//!
//! Invariants (checked by the unit tests):
//! * **At most one message per device is in flight** ("busy"). A device's next message becomes
//!   sendable only when the previous one completed, so retries never reorder a device's messages.
//! * A device is in the ready list at most once, and only when it has a message, is not busy and
//!   is not blocked by a retry timer.
//! * A device blocked until `t` (queue full, throttled, unknown error) becomes ready again only by
//!   [`DeviceQueues::release_due`] at or after `t`; other devices keep flowing meanwhile.
//! * Ready devices are served round-robin (FIFO); a transfer that could not be written goes back to
//!   the front.
//! * `pending` counts every message accepted and not completed; `in_flight` the busy devices.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

/// Device id as the queues key it.
pub type DeviceId = Arc<str>;

#[derive(Debug)]
struct DeviceState<J> {
    queue: VecDeque<J>,
    busy: bool,
    blocked: bool,
    in_ready: bool,
}

impl<J> Default for DeviceState<J> {
    fn default() -> Self {
        DeviceState {
            queue: VecDeque::new(),
            busy: false,
            blocked: false,
            in_ready: false,
        }
    }
}

/// The queues of every device with pending messages.
#[derive(Debug)]
pub struct DeviceQueues<J> {
    devices: HashMap<DeviceId, DeviceState<J>>,
    ready: VecDeque<DeviceId>,
    timers: BinaryHeap<Reverse<(Instant, u64, DeviceId)>>,
    timer_seq: u64,
    pending: usize,
    in_flight: usize,
}

impl<J> Default for DeviceQueues<J> {
    fn default() -> Self {
        DeviceQueues {
            devices: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            pending: 0,
            in_flight: 0,
        }
    }
}

impl<J> DeviceQueues<J> {
    /// Messages accepted and not completed (queued + in flight).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Devices with a message in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Appends a message to its device's queue.
    pub fn push(&mut self, dev: DeviceId, job: J) {
        self.pending += 1;
        let st = self.devices.entry(dev.clone()).or_default();
        st.queue.push_back(job);
        if !st.busy && !st.blocked && !st.in_ready {
            st.in_ready = true;
            self.ready.push_back(dev);
        }
    }

    /// Whether some device has a message that may be sent now.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the next ready device, marks it busy and returns its oldest message to send.
    pub fn start_next(&mut self) -> Option<(DeviceId, &mut J)> {
        let dev = self.ready.pop_front()?;
        let st = self.devices.get_mut(&dev).expect("ready device has state");
        st.in_ready = false;
        st.busy = true;
        self.in_flight += 1;
        let job = st.queue.front_mut().expect("ready device has a message");
        Some((dev, job))
    }

    /// The oldest message of a device.
    pub fn front_mut(&mut self, dev: &DeviceId) -> Option<&mut J> {
        self.devices.get_mut(dev)?.queue.front_mut()
    }

    /// The transfer of a started message was not written or its settlement was lost: the
    /// device is sendable again, at the front of the ready list.
    pub fn unstart(&mut self, dev: &DeviceId) {
        let Some(st) = self.devices.get_mut(dev) else {
            return;
        };
        if st.busy {
            st.busy = false;
            self.in_flight -= 1;
        }
        if !st.in_ready && !st.blocked && !st.queue.is_empty() {
            st.in_ready = true;
            self.ready.push_front(dev.clone());
        }
    }

    /// After a connection loss: every busy device is sendable again (its message is resent).
    pub fn unstart_all(&mut self) {
        let busy: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, s)| s.busy)
            .map(|(d, _)| d.clone())
            .collect();
        for d in busy {
            self.unstart(&d);
        }
    }

    /// The device's oldest message is done: removes and returns it; the device's next message
    /// becomes sendable (unless a timer blocks the device).
    pub fn complete(&mut self, dev: &DeviceId) -> Option<J> {
        let st = self.devices.get_mut(dev)?;
        let job = st.queue.pop_front()?;
        self.pending -= 1;
        if st.busy {
            st.busy = false;
            self.in_flight -= 1;
        }
        if st.queue.is_empty() {
            if !st.blocked {
                self.devices.remove(dev);
            }
        } else if !st.blocked && !st.in_ready {
            st.in_ready = true;
            self.ready.push_back(dev.clone());
        }
        Some(job)
    }

    /// The device's message failed transiently: the device is not busy and waits until `at`.
    pub fn retry_at(&mut self, dev: &DeviceId, at: Instant) {
        let Some(st) = self.devices.get_mut(dev) else {
            return;
        };
        if st.busy {
            st.busy = false;
            self.in_flight -= 1;
        }
        if st.in_ready {
            st.in_ready = false;
            self.ready.retain(|d| d != dev);
        }
        st.blocked = true;
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, dev.clone())));
    }

    /// The earliest retry timer.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Unblocks the devices whose timers are due at `now`.
    pub fn release_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, dev)) = self.timers.pop().expect("peeked");
            let Some(st) = self.devices.get_mut(&dev) else {
                continue;
            };
            st.blocked = false;
            if st.queue.is_empty() {
                if !st.busy {
                    self.devices.remove(&dev);
                }
            } else if !st.busy && !st.in_ready {
                st.in_ready = true;
                self.ready.push_back(dev);
            }
        }
    }

    /// Forgets everything and returns the messages (forced close).
    pub fn take_all(&mut self) -> Vec<J> {
        self.ready.clear();
        self.timers.clear();
        self.pending = 0;
        self.in_flight = 0;
        self.devices
            .drain()
            .flat_map(|(_, s)| s.queue.into_iter())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn d(s: &str) -> DeviceId {
        Arc::from(s)
    }

    #[test]
    fn one_in_flight_per_device_and_round_robin() {
        let mut q = DeviceQueues::default();
        q.push(d("a"), 1);
        q.push(d("a"), 2);
        q.push(d("b"), 3);
        let (dev, j) = q.start_next().unwrap();
        assert_eq!((&*dev, *j), ("a", 1));
        let (dev, j) = q.start_next().unwrap();
        assert_eq!((&*dev, *j), ("b", 3));
        assert!(q.start_next().is_none(), "a is busy: its 2 must wait");
        assert_eq!(q.in_flight(), 2);
        assert_eq!(q.complete(&d("a")), Some(1));
        let (dev, j) = q.start_next().unwrap();
        assert_eq!((&*dev, *j), ("a", 2));
        assert_eq!(q.complete(&d("a")), Some(2));
        assert_eq!(q.complete(&d("b")), Some(3));
        assert_eq!((q.pending(), q.in_flight()), (0, 0));
        assert!(q.devices.is_empty());
    }

    #[test]
    fn blocked_device_waits_while_others_flow() {
        let t0 = Instant::now();
        let mut q = DeviceQueues::default();
        q.push(d("full"), 1);
        q.push(d("full"), 2);
        q.push(d("ok"), 3);
        let (dev, _) = q.start_next().unwrap();
        q.retry_at(&dev, t0 + Duration::from_secs(1));
        assert_eq!(q.next_timer(), Some(t0 + Duration::from_secs(1)));
        let (dev, _) = q.start_next().unwrap();
        assert_eq!(&*dev, "ok");
        assert!(q.start_next().is_none());
        q.release_due(t0 + Duration::from_millis(999));
        assert!(!q.has_ready());
        q.release_due(t0 + Duration::from_secs(1));
        let (dev, j) = q.start_next().unwrap();
        assert_eq!((&*dev, *j), ("full", 1), "the same message again, first");
    }

    #[test]
    fn lost_transfers_go_back_to_the_front() {
        let mut q = DeviceQueues::default();
        q.push(d("a"), 1);
        q.push(d("b"), 2);
        q.push(d("c"), 3);
        let (a, _) = q.start_next().unwrap();
        let (b, _) = q.start_next().unwrap();
        q.unstart(&b);
        assert_eq!(&*q.start_next().unwrap().0, "b");
        q.unstart_all();
        assert_eq!(q.in_flight(), 0);
        let order: Vec<String> =
            std::iter::from_fn(|| q.start_next().map(|(d, _)| d.to_string())).collect();
        assert_eq!(order.len(), 3);
        assert!(order.contains(&a.to_string()));
        assert_eq!(q.take_all().len(), 3);
        assert_eq!(q.pending(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u8),
        Start,
        Complete(u8),
        Retry(u8, u8),
        Unstart(u8),
        Tick(u8),
        LoseAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Push),
            Just(Op::Start),
            (0u8..4).prop_map(Op::Complete),
            ((0u8..4), (0u8..5)).prop_map(|(a, b)| Op::Retry(a, b)),
            (0u8..4).prop_map(Op::Unstart),
            (0u8..5).prop_map(Op::Tick),
            Just(Op::LoseAll),
        ]
    }

    proptest! {
        /// Against a model: per-device FIFO, one in flight per device, every message completed
        /// exactly once, counters consistent.
        #[test]
        fn behaves_like_the_model(ops in proptest::collection::vec(op(), 1..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut q: DeviceQueues<(u8, u32)> = DeviceQueues::default();
            let mut next = [0u32; 4];
            let mut completed_upto = [0u32; 4];
            let mut busy: HashMap<u8, u32> = HashMap::new();
            let mut pushed = 0usize;
            let mut done = 0usize;
            for op in ops {
                match op {
                    Op::Push(dev) => {
                        q.push(d(&dev.to_string()), (dev, next[dev as usize]));
                        next[dev as usize] += 1;
                        pushed += 1;
                    }
                    Op::Start => {
                        if let Some((dv, j)) = q.start_next() {
                            let (dev, n) = *j;
                            let name = dev.to_string();
                            prop_assert_eq!(&*dv, name.as_str());
                            prop_assert!(!busy.contains_key(&dev), "two in flight for {}", dev);
                            prop_assert_eq!(n, completed_upto[dev as usize], "oldest first");
                            busy.insert(dev, n);
                        }
                    }
                    Op::Complete(dev) => {
                        if busy.remove(&dev).is_some() {
                            let (_, n) = q.complete(&d(&dev.to_string())).unwrap();
                            prop_assert_eq!(n, completed_upto[dev as usize]);
                            completed_upto[dev as usize] += 1;
                            done += 1;
                        }
                    }
                    Op::Retry(dev, ms) => {
                        if busy.remove(&dev).is_some() {
                            q.retry_at(&d(&dev.to_string()), now + Duration::from_millis(ms as u64));
                        }
                    }
                    Op::Unstart(dev) => {
                        if busy.remove(&dev).is_some() {
                            q.unstart(&d(&dev.to_string()));
                        }
                    }
                    Op::Tick(ms) => {
                        now += Duration::from_millis(ms as u64);
                        q.release_due(now);
                    }
                    Op::LoseAll => {
                        busy.clear();
                        q.unstart_all();
                    }
                }
                prop_assert_eq!(q.in_flight(), busy.len());
                prop_assert_eq!(q.pending(), pushed - done);
                let mut seen = std::collections::HashSet::new();
                for r in &q.ready {
                    prop_assert!(seen.insert(r.clone()), "device twice in ready");
                    let st = &q.devices[r];
                    prop_assert!(!st.busy && !st.blocked && !st.queue.is_empty());
                }
            }
            // Everything drains: release all timers, then complete everything.
            busy.clear();
            q.unstart_all();
            q.release_due(now + Duration::from_secs(10));
            while let Some((dv, _)) = q.start_next() {
                q.complete(&dv).unwrap();
                done += 1;
            }
            prop_assert_eq!(done, pushed);
            prop_assert_eq!(q.pending(), 0);
        }
    }
}
