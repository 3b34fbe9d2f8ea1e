//! Records the history of a simulation run: client operations, node observations, faults.
//!
//! Time is the simulated clock (nanoseconds since the run started), so a seed replays the very
//! same history, byte for byte; its hash is the run's trace hash.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use keel_checker::Event;
use keel_checker::EventType;
use keel_checker::Op;

#[derive(Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    t0: Instant,
}

impl Recorder {
    /// A recorder whose clock starts now (call inside the simulation).
    pub fn new() -> Recorder {
        Recorder { events: Arc::new(Mutex::new(Vec::new())), t0: Instant::now() }
    }

    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn record(&self, process: u64, kind: EventType, op: Op) {
        let time_ns = self.elapsed_ns();
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(Event { process, kind, op, time_ns });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}
