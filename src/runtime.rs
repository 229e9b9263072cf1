//! Polling before sleeping (`ecslb run --poll-before-sleep`): a worker that runs out of
//! tasks keeps asking the kernel for events, without waiting, for a short while after
//! its last work before it blocks in `epoll_wait`.
//!
//! A sleeping core is woken by an inter-processor interrupt from the core that sent it
//! work; in a VM each one is a trip through the hypervisor, which the sending core pays
//! too. Under load a proxy's worker runs out of tasks for a few microseconds at a time,
//! between one burst of events and the next, and sleeping through those gaps costs more
//! than polling through them. The kernel's halt polling does this for a whole guest
//! (`guest_halt_poll_ns`), where the VM has it on; this does it for ecslb's worker, and
//! once nothing has happened for the window the worker sleeps as before, so an idle
//! proxy uses no CPU. The time spent polling counts as ecslb's CPU time, which is why it
//! is off by default.
//!
//! How: tokio calls `on_thread_park` before a worker blocks, and a current-thread
//! runtime does not block (it polls its drivers with a zero timeout instead) when the
//! hook made a task ready. The hook wakes [`idle_task`], which does nothing, while the
//! window since the worker last worked is open. Work is told from polling by this
//! thread's CPU time: a round that only polled for events and ran the idle task takes
//! a microsecond or two; a longer one ran something. Being descheduled is not work,
//! and the window is wall-clock time, so a worker on a busy host still goes to sleep.
//!
//! Only for a current-thread runtime (`--workers 1`): the multi-threaded one calls the
//! hook without its core, so the task the hook wakes would be sent to another worker.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A round between two park attempts that used more CPU than this, or three times the
/// quickest round seen (a debug build's is about 4 µs), did some work. An optimised
/// build's empty round takes about 1.1 µs; a request through the proxy, 10 µs or more.
const QUIET_ROUND: Duration = Duration::from_micros(5);

/// The longest window. The kernel's timer tick (every 1 to 10 ms, by `CONFIG_HZ`) is
/// charged to the thread it interrupts, 20–50 µs on a VM, and so looks like work: a
/// window longer than the tick's period could be kept open by ticks alone.
pub const MAX_WINDOW: Duration = Duration::from_micros(500);

/// One worker thread's polling state.
#[derive(Default)]
struct Worker {
    /// The idle task's waker, once it has run on this thread.
    idle_task: Option<Waker>,
    /// The thread's CPU time when it last tried to park.
    cpu_at_park: Duration,
    /// The least CPU a round took, from one park attempt to the next.
    quickest_round: Option<Duration>,
    /// When the thread last worked.
    worked_at: Option<Instant>,
    /// Whether the thread went to sleep when it last parked; waking up means work.
    slept: bool,
}

impl Worker {
    /// At a park attempt, with the thread's CPU time `cpu`: whether to poll again
    /// rather than sleep.
    fn keep_polling(&mut self, cpu: Duration, now: Instant, window: Duration) -> bool {
        let round = cpu.saturating_sub(self.cpu_at_park);
        self.cpu_at_park = cpu;
        // The first round is the runtime starting, which is work.
        let worked = self.slept
            || self
                .quickest_round
                .is_none_or(|quickest| round >= QUIET_ROUND.max(quickest * 3));
        self.quickest_round = Some(self.quickest_round.map_or(round, |q| q.min(round)));
        if worked {
            self.worked_at = Some(now);
        }
        let poll = self.idle_task.is_some()
            && self
                .worked_at
                .is_some_and(|at| now.duration_since(at) < window);
        self.slept = !poll;
        poll
    }
}

thread_local! {
    static WORKER: RefCell<Worker> = RefCell::new(Worker::default());
}

/// Sets up a current-thread runtime's `builder` to keep polling for `window` (at most
/// [`MAX_WINDOW`]) after its last work before it sleeps; spawn [`idle_task`] on the
/// runtime it builds. A zero window leaves the builder as it was.
pub fn poll_before_sleeping(builder: &mut tokio::runtime::Builder, window: Duration) {
    if window.is_zero() {
        return;
    }
    let window = window.min(MAX_WINDOW);
    builder.on_thread_park(move || {
        let cpu = thread_cpu_time();
        let now = Instant::now();
        WORKER.with_borrow_mut(|w| {
            if w.keep_polling(cpu, now, window) {
                if let Some(task) = &w.idle_task {
                    task.wake_by_ref();
                }
            }
        });
    });
}

/// The task that [`poll_before_sleeping`]'s hook wakes to keep its worker from
/// sleeping. It never finishes.
pub fn idle_task() -> impl Future<Output = ()> + Send + 'static {
    IdleTask
}

struct IdleTask;

impl Future for IdleTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        WORKER.with_borrow_mut(|w| match &w.idle_task {
            Some(task) if task.will_wake(cx.waker()) => {}
            _ => w.idle_task = Some(cx.waker().clone()),
        });
        Poll::Pending
    }
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const WINDOW: Duration = Duration::from_micros(50);

    /// A worker whose idle task has run.
    fn worker() -> Worker {
        Worker {
            idle_task: Some(Waker::noop().clone()),
            ..Worker::default()
        }
    }

    /// Moves `cpu` and `now` on by `round` and has `w` try to park then: whether it
    /// polls.
    fn park_after(w: &mut Worker, cpu: &mut Duration, now: &mut Instant, round: Duration) -> bool {
        *cpu += round;
        *now += round;
        w.keep_polling(*cpu, *now, WINDOW)
    }

    /// Feeds `w` park attempts `round` apart in both CPU and wall time, from `cpu` and
    /// `now`, until it sleeps or `limit` has passed; returns when it slept, if it did.
    fn poll_until_sleep(
        w: &mut Worker,
        cpu: &mut Duration,
        now: &mut Instant,
        round: Duration,
        limit: Duration,
    ) -> Option<Duration> {
        let start = *now;
        while now.duration_since(start) <= limit {
            if !park_after(w, cpu, now, round) {
                return Some(now.duration_since(start));
            }
        }
        None
    }

    #[test]
    fn a_worker_polls_through_quiet_rounds_for_the_window_then_sleeps() {
        let (mut w, mut cpu, mut now) = (worker(), 300 * US, Instant::now());
        assert!(w.keep_polling(cpu, now, WINDOW), "starting up is work");
        let slept = poll_until_sleep(&mut w, &mut cpu, &mut now, US, 10 * WINDOW);
        assert_eq!(slept, Some(WINDOW));
    }

    #[test]
    fn work_opens_the_window_again_and_so_does_waking_up() {
        let (mut w, mut cpu, mut now) = (worker(), 300 * US, Instant::now());
        assert!(w.keep_polling(cpu, now, WINDOW));
        // Quiet for 40 µs, then a round with 20 µs of work: 50 µs more from there.
        assert_eq!(
            poll_until_sleep(&mut w, &mut cpu, &mut now, US, 40 * US),
            None
        );
        assert!(park_after(&mut w, &mut cpu, &mut now, 20 * US));
        let slept = poll_until_sleep(&mut w, &mut cpu, &mut now, US, 10 * WINDOW);
        assert_eq!(slept, Some(WINDOW));
        // Woken a second later, even by a cheap event: a new window.
        cpu += US;
        now += Duration::from_secs(1);
        assert!(w.keep_polling(cpu, now, WINDOW));
        let slept = poll_until_sleep(&mut w, &mut cpu, &mut now, US, 10 * WINDOW);
        assert_eq!(slept, Some(WINDOW));
    }

    #[test]
    fn being_descheduled_is_not_work() {
        let (mut w, mut cpu, mut now) = (worker(), 300 * US, Instant::now());
        assert!(w.keep_polling(cpu, now, WINDOW));
        // Rounds of 1 µs of CPU that take 30 µs of wall time each.
        let mut rounds = 0;
        while w.keep_polling(cpu + US, now + 30 * US, WINDOW) {
            cpu += US;
            now += 30 * US;
            rounds += 1;
        }
        assert_eq!(rounds, 1, "the second 30 µs round ends the 50 µs window");
    }

    #[test]
    fn slow_empty_rounds_are_told_from_work_by_the_quickest_one() {
        // A debug build: the quickest empty round takes 4 µs, and noise makes some 8.
        let (mut w, mut cpu, mut now) = (worker(), 300 * US, Instant::now());
        assert!(w.keep_polling(cpu, now, WINDOW));
        assert!(park_after(&mut w, &mut cpu, &mut now, 4 * US));
        // 8 µs rounds are over 5 µs but under three times 4: quiet, so it sleeps.
        let slept = poll_until_sleep(&mut w, &mut cpu, &mut now, 8 * US, 10 * WINDOW);
        assert!(slept.is_some_and(|at| at <= WINDOW), "{slept:?}");
        // 15 µs rounds are work, and it keeps polling.
        let slept = poll_until_sleep(&mut w, &mut cpu, &mut now, 15 * US, 10 * WINDOW);
        assert_eq!(slept, None);
    }

    #[test]
    fn without_its_idle_task_a_worker_sleeps() {
        let mut w = Worker::default();
        assert!(!w.keep_polling(300 * US, Instant::now(), WINDOW));
    }

    /// The hook, on a real runtime: a worker waiting for an event that comes 100 µs
    /// later polls (does not go to sleep) in at least one of 20 tries. Without the
    /// hook it would sleep in every one, having nothing else to do. The event is a
    /// kernel timer (a timerfd), so no other thread has to be scheduled in time.
    #[test]
    fn a_runtime_polls_while_waiting_for_an_event_within_the_window() {
        use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, Timespec};
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        poll_before_sleeping(&mut builder, MAX_WINDOW);
        let runtime = builder.build().expect("runtime");
        runtime.spawn(idle_task());
        let tries_without_sleep = runtime.block_on(async {
            let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
            let timer =
                rustix::time::timerfd_create(TimerfdClockId::Monotonic, flags).expect("timerfd");
            // Deprecated because an fd that is only `AsRawFd` may be closed under tokio;
            // this one is an `OwnedFd` it owns. The replacement is `unsafe`, which this
            // crate forbids.
            #[allow(deprecated)]
            let timer = tokio::io::unix::AsyncFd::new(timer).expect("registered");
            let in_100us = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000,
                },
            };
            tokio::task::yield_now().await;
            let metrics = tokio::runtime::Handle::current().metrics();
            let mut without_sleep = 0;
            for _ in 0..20 {
                let flags = rustix::time::TimerfdTimerFlags::empty();
                rustix::time::timerfd_settime(timer.get_ref(), flags, &in_100us).expect("set");
                let before = metrics.worker_park_count(0);
                let mut expirations = [0u8; 8];
                loop {
                    let mut ready = timer.readable().await.expect("readable");
                    match rustix::io::read(timer.get_ref(), &mut expirations) {
                        Ok(_) => break,
                        Err(_) => ready.clear_ready(),
                    }
                }
                if metrics.worker_park_count(0) == before {
                    without_sleep += 1;
                }
            }
            without_sleep
        });
        assert!(tries_without_sleep >= 1, "the worker slept in all 20 tries");
        // And it sleeps once nothing happens for longer than the window.
        let slept = runtime.block_on(async {
            let metrics = tokio::runtime::Handle::current().metrics();
            let before = metrics.worker_park_count(0);
            tokio::time::sleep(Duration::from_millis(50)).await;
            metrics.worker_park_count(0) - before
        });
        assert!(slept >= 1, "the worker polled for 50 ms");
    }
}
