//! The async runtime openraft runs on: real tokio normally, madsim under `--cfg madsim`.
//!
//! Under madsim, openraft's `AsyncRuntime` is implemented here over madsim's tasks and clock:
//! tasks spawn on the current simulated node (a node kill takes them down), randomness is seeded
//! from madsim's RNG, and the watch channel is openraft-rt-sim's FIFO `SimWatch` — tokio's watch
//! wakes waiters in a process-random order, which breaks same-seed replay. madsim has one clock
//! for every node; [`drift`] gives each node a clock of its own that may run fast or slow, and
//! openraft's `Instant`, sleeps and timeouts (election timeouts, heartbeats, leader leases) run
//! on that clock, as does the node's wall clock ([`crate::clock`]).
//!
//! [`blocking`] runs a synchronous storage call (an fsync) off the async workers on tokio, and
//! inline under madsim, whose simulated disk never blocks.
//!
//! [`spawn`] starts every task of the node: on tokio the task runs in its spawner's tracing
//! span, so each log line of a node carries its `node{id=N}` span (entered by the command line)
//! however deep the task that wrote it — `keel dev` runs three nodes in one process. openraft's
//! own tasks get the same through [`Runtime`]. Under madsim, madsim labels tasks by node itself.

use std::future::Future;

#[cfg(not(madsim))]
pub type Runtime = tokio_rt::TokioRuntime;

#[cfg(madsim)]
pub type Runtime = sim::MadsimRuntime;

#[cfg(madsim)]
pub use sim::drift;

/// Spawns a task of this node (see the module doc); use it instead of `tokio::spawn`.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        tokio::spawn(tracing::Instrument::in_current_span(future))
    }
    #[cfg(madsim)]
    {
        tokio::spawn(future)
    }
}

/// Runs `f`, a synchronous call that may block on a disk, without stalling the async workers.
pub async fn blocking<F, T>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    #[cfg(madsim)]
    {
        Ok(f())
    }
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)
    }
}

/// openraft's tokio runtime, whose tasks run in their spawner's tracing span.
#[cfg(not(madsim))]
mod tokio_rt {
    use std::future::Future;
    use std::time::Duration;

    use openraft_rt::AsyncRuntime;
    use openraft_rt::OptionalSend;
    use tracing::Instrument;

    type Inner = openraft_rt_tokio::TokioRuntime;

    #[derive(Debug)]
    pub struct TokioRuntime(Inner);

    impl AsyncRuntime for TokioRuntime {
        type JoinError = <Inner as AsyncRuntime>::JoinError;
        type JoinHandle<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::JoinHandle<T>;
        type Sleep = <Inner as AsyncRuntime>::Sleep;
        type Instant = <Inner as AsyncRuntime>::Instant;
        type TimeoutError = <Inner as AsyncRuntime>::TimeoutError;
        type Timeout<R, T: Future<Output = R> + OptionalSend> = <Inner as AsyncRuntime>::Timeout<R, T>;
        type ThreadLocalRng = <Inner as AsyncRuntime>::ThreadLocalRng;

        fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
        where
            T: Future + OptionalSend + 'static,
            T::Output: OptionalSend + 'static,
        {
            Inner::spawn(future.in_current_span())
        }

        fn sleep(duration: Duration) -> Self::Sleep {
            Inner::sleep(duration)
        }

        fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
            Inner::sleep_until(deadline)
        }

        fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
            Inner::timeout(duration, future)
        }

        fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
            deadline: Self::Instant,
            future: F,
        ) -> Self::Timeout<R, F> {
            Inner::timeout_at(deadline, future)
        }

        fn is_panic(join_error: &Self::JoinError) -> bool {
            Inner::is_panic(join_error)
        }

        fn thread_rng() -> Self::ThreadLocalRng {
            Inner::thread_rng()
        }

        type Mpsc = <Inner as AsyncRuntime>::Mpsc;
        type Watch = <Inner as AsyncRuntime>::Watch;
        type Oneshot = <Inner as AsyncRuntime>::Oneshot;
        type Mutex<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::Mutex<T>;

        fn new(threads: usize) -> Self {
            TokioRuntime(Inner::new(threads))
        }

        fn block_on<F, T>(&mut self, future: F) -> T
        where
            F: Future<Output = T>,
        {
            self.0.block_on(future)
        }
    }
}

#[cfg(madsim)]
mod sim {
    use std::fmt;
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::task::Context;
    use std::task::Poll;
    use std::time::Duration;

    use openraft_rt::AsyncRuntime;
    use openraft_rt::OptionalSend;
    use pin_project_lite::pin_project;
    use rand10::SeedableRng;
    use rand10::rngs::SmallRng;

    /// openraft's runtime over madsim. Constructed by openraft only in its own tests; Keel's
    /// simulation builds the madsim runtime itself and runs nodes inside it.
    pub struct MadsimRuntime {
        rt: madsim::runtime::Runtime,
    }

    pub mod drift {
        //! Clocks of their own for simulated nodes. madsim keeps one clock; a node given a rate
        //! here sees its own time run `rate_ppm` parts per million fast (positive) or slow
        //! (negative): `node_now = anchor_node + (sim_now - anchor_sim) * (1 + rate_ppm / 10^6)`,
        //! re-anchored whenever the rate changes, so a node's time never jumps or goes back.
        //! openraft's `Instant`, sleeps and timeouts convert through it, and so does the node's
        //! wall clock (`crate::clock::wall_clock_ms`, which adds the node's offset). A node
        //! without a rate runs on madsim's clock. Keyed by madsim's node id, so a restarted
        //! node keeps its clock; the simulation clears the table at the start of every seed.

        use std::cell::RefCell;
        use std::collections::BTreeMap;
        use std::ops::Add;
        use std::ops::AddAssign;
        use std::ops::Sub;
        use std::ops::SubAssign;
        use std::time::Duration;
        use std::time::Instant;

        use madsim::task::NodeId;

        /// The slowest and fastest rates a node may be given (a clock running at half or at
        /// twice the real rate).
        pub const RATE_PPM_MIN: i64 = -500_000;
        pub const RATE_PPM_MAX: i64 = 1_000_000;

        #[derive(Clone, Copy, Debug)]
        struct Clock {
            rate_ppm: i64,
            anchor_sim: Instant,
            anchor_node: Instant,
        }

        impl Clock {
            fn node_time(&self, sim: Instant) -> Instant {
                self.anchor_node + scale(sim.saturating_duration_since(self.anchor_sim), self.rate_ppm)
            }
        }

        thread_local! {
            /// madsim runs a whole simulation on one thread, so each simulation (and each test
            /// running one) has a table of its own.
            static CLOCKS: RefCell<BTreeMap<NodeId, Clock>> = const { RefCell::new(BTreeMap::new()) };
        }

        /// `d` on a clock running `rate_ppm` fast.
        fn scale(d: Duration, rate_ppm: i64) -> Duration {
            let nanos = d.as_nanos() * (1_000_000 + rate_ppm) as u128 / 1_000_000;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }

        /// `d` of a node's time in madsim's time.
        fn unscale(d: Duration, rate_ppm: i64) -> Duration {
            let nanos = d.as_nanos() * 1_000_000 / (1_000_000 + rate_ppm) as u128;
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }

        fn current() -> Option<Clock> {
            CLOCKS.with(|c| {
                let clocks = c.borrow();
                if clocks.is_empty() { None } else { clocks.get(&madsim::plugin::node()).copied() }
            })
        }

        /// Sets `node`'s clock rate from now on (clamped to [`RATE_PPM_MIN`]..=[`RATE_PPM_MAX`];
        /// 0 runs at madsim's rate, keeping the offset gathered so far).
        pub fn set_rate(node: NodeId, rate_ppm: i64) {
            let rate_ppm = rate_ppm.clamp(RATE_PPM_MIN, RATE_PPM_MAX);
            let sim = Instant::now();
            CLOCKS.with(|c| {
                let mut clocks = c.borrow_mut();
                let anchor_node = clocks.get(&node).map_or(sim, |c| c.node_time(sim));
                clocks.insert(node, Clock { rate_ppm, anchor_sim: sim, anchor_node });
            });
        }

        /// Every node back on madsim's clock (a new seed).
        pub fn reset() {
            CLOCKS.with(|c| c.borrow_mut().clear());
        }

        /// How far the current node's clock is ahead of madsim's (negative: behind), in ms.
        pub fn offset_ms() -> i64 {
            let Some(c) = current() else { return 0 };
            let sim = Instant::now();
            let node = c.node_time(sim);
            if node >= sim {
                i64::try_from(node.duration_since(sim).as_millis()).unwrap_or(i64::MAX)
            } else {
                -i64::try_from(sim.duration_since(node).as_millis()).unwrap_or(i64::MAX)
            }
        }

        /// A duration of the current node's time in madsim's time.
        pub fn to_sim(d: Duration) -> Duration {
            match current() {
                Some(c) => unscale(d, c.rate_ppm),
                None => d,
            }
        }

        /// madsim's time until the current node's clock reads `deadline`.
        pub fn until(deadline: NodeInstant) -> Duration {
            to_sim(deadline.0.saturating_duration_since(<NodeInstant as openraft_rt::Instant>::now().0))
        }

        /// openraft's `Instant` under madsim: a reading of the current node's clock.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub struct NodeInstant(Instant);

        impl openraft_rt::Instant for NodeInstant {
            fn now() -> Self {
                let sim = Instant::now();
                NodeInstant(current().map_or(sim, |c| c.node_time(sim)))
            }
        }

        impl Add<Duration> for NodeInstant {
            type Output = NodeInstant;
            fn add(self, d: Duration) -> NodeInstant {
                NodeInstant(self.0 + d)
            }
        }

        impl AddAssign<Duration> for NodeInstant {
            fn add_assign(&mut self, d: Duration) {
                self.0 += d;
            }
        }

        impl Sub<Duration> for NodeInstant {
            type Output = NodeInstant;
            fn sub(self, d: Duration) -> NodeInstant {
                NodeInstant(self.0 - d)
            }
        }

        impl SubAssign<Duration> for NodeInstant {
            fn sub_assign(&mut self, d: Duration) {
                self.0 -= d;
            }
        }

        impl Sub<NodeInstant> for NodeInstant {
            type Output = Duration;
            fn sub(self, other: NodeInstant) -> Duration {
                self.0.saturating_duration_since(other.0)
            }
        }
    }

    impl fmt::Debug for MadsimRuntime {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MadsimRuntime").finish()
        }
    }

    pin_project! {
        /// A nameable, `Send` timeout (madsim's own `timeout` returns an unnameable future).
        /// Polls the inner future first, then the deadline.
        pub struct MadsimTimeout<F> {
            #[pin]
            future: F,
            #[pin]
            sleep: madsim::time::Sleep,
        }
    }

    impl<F: Future> Future for MadsimTimeout<F> {
        type Output = Result<F::Output, madsim::time::error::Elapsed>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            if let Poll::Ready(v) = this.future.poll(cx) {
                return Poll::Ready(Ok(v));
            }
            match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(madsim::time::error::Elapsed)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl AsyncRuntime for MadsimRuntime {
        type JoinError = madsim::task::JoinError;
        type JoinHandle<T: OptionalSend + 'static> = madsim::task::JoinHandle<T>;
        type Sleep = madsim::time::Sleep;
        type Instant = drift::NodeInstant;
        type TimeoutError = madsim::time::error::Elapsed;
        type Timeout<R, T: Future<Output = R> + OptionalSend> = MadsimTimeout<T>;
        type ThreadLocalRng = SmallRng;

        fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
        where
            T: Future + OptionalSend + 'static,
            T::Output: OptionalSend + 'static,
        {
            madsim::task::spawn(future)
        }

        fn sleep(duration: Duration) -> Self::Sleep {
            madsim::time::sleep(drift::to_sim(duration))
        }

        fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
            madsim::time::sleep(drift::until(deadline))
        }

        fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
            MadsimTimeout { future, sleep: madsim::time::sleep(drift::to_sim(duration)) }
        }

        fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
            deadline: Self::Instant,
            future: F,
        ) -> Self::Timeout<R, F> {
            MadsimTimeout { future, sleep: madsim::time::sleep(drift::until(deadline)) }
        }

        fn is_panic(join_error: &Self::JoinError) -> bool {
            join_error.is_panic()
        }

        fn thread_rng() -> Self::ThreadLocalRng {
            // madsim's global RNG is rand 0.8; openraft wants rand 0.10. Seed one from the other.
            SmallRng::seed_from_u64(madsim::rand::random::<u64>())
        }

        type Mpsc = openraft_rt_tokio::TokioMpsc;
        type Watch = openraft_rt_sim::SimWatch;
        type Oneshot = openraft_rt_tokio::TokioOneshot;
        type Mutex<T: OptionalSend + 'static> = openraft_rt_tokio::TokioMutex<T>;

        fn new(_threads: usize) -> Self {
            let seed = std::env::var("MADSIM_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            MadsimRuntime { rt: madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()) }
        }

        fn block_on<F, T>(&mut self, future: F) -> T
        where
            F: Future<Output = T>,
        {
            self.rt.block_on(future)
        }

        fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            // The default starts an OS thread, which madsim forbids; run on a madsim task.
            let h = madsim::task::spawn(async move { f() });
            async move { h.await.map_err(io::Error::other) }
        }
    }
}
