//! Loom model checks of the waiter protocol ([`super::state`]): every
//! interleaving (up to a preemption bound) of a backend finishing a wait, a
//! consumer observing or cancelling it, and a backend helper passing on
//! forwarded wakes, with the production `State` code and loom's atomics,
//! memory orderings and a modelled futex on the state word.
//!
//! Run (a separate target directory: loom needs its own build):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom`
//! (`-- --nocapture` prints how many interleavings each model explored;
//! `LOOM_MAX_PREEMPTIONS` overrides the bound of 3).
//!
//! Invariants checked in every interleaving:
//! - a consumed wake (`Woken`) is either observed by the consumer or passed
//!   on exactly once — never both, never neither; other outcomes are never
//!   passed on;
//! - the backend finishes the word exactly once and delivers at most once;
//!   a consumer that did not cancel is delivered to;
//! - nothing is delivered to the sink after a cancel (or an eventfd ack)
//!   returned, and an eventfd sink is left without stale readiness;
//! - `cancel(sync)` returns only once the backend is done (`DELIVERED`);
//! - a forward made by the consumer's cancel is complete when it returns;
//! - a `Failed` outcome is observed with its errno;
//! - with a sink the kernel signals itself (io_uring's eventfd write
//!   linked to the wait, `kernel_signals`), delivery adds no readiness, a
//!   cancelled wait's write is drained (`Effects::discard`) and the
//!   eventfd is still left without stale readiness;
//! - nothing deadlocks (a lost wake-up of a sleeper is a loom deadlock).

use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use super::state::{Effects, Forward, Outcome, State, DELIVERED, DONE, FORWARDED};

/// How the backend passes on a forwarded wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardBy {
    /// io_uring: `wake(1)` and `forwarded()` inside `forward`.
    Inline,
    /// Thread backend: queued on a helper thread that calls `forwarded()`
    /// later.
    Helper,
    /// No live backend (armed before a fork): a plain `wake(1)`, no
    /// `FORWARDED` bit.
    Direct,
}

/// How the backend ends the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// On its own (a kernel wake, a mismatch, an error...), racing the
    /// consumer.
    With(Outcome),
    /// Only once the consumer asked for the cancel (`-ECANCELED` of an
    /// io_uring cancel, the thread helper dropping a cancelled wait).
    OnCancel,
}

/// What the consumer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consumer {
    /// `WaitFuture`: polled once (takes the result if done), else dropped:
    /// `cancel(false)`.
    Future,
    /// `WaitFuture` dropped without looking: `cancel(false)`.
    FutureDropped,
    /// `EventFdFutex`: `ack` once (result + settle if done), else
    /// `cancel(true)`.
    EventFd,
    /// `EventFdFutex::cancel` without an ack: `cancel(true)`.
    EventFdCancel,
}

impl Consumer {
    fn eventfd(self) -> bool {
        matches!(self, Consumer::EventFd | Consumer::EventFdCancel)
    }

    fn looks(self) -> bool {
        matches!(self, Consumer::Future | Consumer::EventFd)
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    finish: Finish,
    consumer: Consumer,
    by: ForwardBy,
    /// The consumer cancels a second time right after the first.
    double_cancel: bool,
    /// The backend finishes before the consumer acts (done, not observed).
    backend_first: bool,
    /// The kernel signals the eventfd sink itself, before the backend
    /// finishes the wait (io_uring's caller-submitted waits: a write of the
    /// eventfd hard-linked to the `FUTEX_WAIT`, whatever its result).
    kernel_signals: bool,
}

const ERRNO: i32 = libc::EFAULT;

impl Scenario {
    fn new(finish: Finish, consumer: Consumer, by: ForwardBy) -> Scenario {
        Scenario {
            finish,
            consumer,
            by,
            double_cancel: false,
            backend_first: false,
            kernel_signals: false,
        }
    }

    /// The same, with the eventfd signalled by the kernel itself.
    fn kernel_signalled(finish: Finish, consumer: Consumer) -> Scenario {
        assert!(
            consumer.eventfd(),
            "only an eventfd sink is kernel-signalled"
        );
        Scenario {
            kernel_signals: true,
            ..Scenario::new(finish, consumer, ForwardBy::Inline)
        }
    }

    fn outcome(&self) -> Outcome {
        match self.finish {
            Finish::With(outcome) => outcome,
            Finish::OnCancel => Outcome::Cancelled,
        }
    }
}

#[derive(Default)]
struct HelperQueue {
    pending: usize,
    closing: bool,
}

/// The world the protocol acts on, instrumented.
struct Model {
    state: State,
    scenario: Scenario,
    /// `Effects::forward` calls.
    forwards_asked: AtomicUsize,
    /// Wakes actually passed on.
    forwards_passed: AtomicUsize,
    word_finished: AtomicUsize,
    delivers: AtomicUsize,
    /// The eventfd counter (eventfd sinks).
    readiness: AtomicUsize,
    /// Set once the consumer may no longer be delivered to: a cancel or an
    /// eventfd ack returned.
    closed: AtomicBool,
    /// The consumer's thread (the model's main thread), and the effects
    /// it caused.
    consumer_thread: thread::ThreadId,
    consumer_effects: AtomicUsize,
    /// The consumer asked the backend to cancel.
    cancel_asked: Mutex<bool>,
    cancel_cond: Condvar,
    helper: Mutex<HelperQueue>,
    helper_cond: Condvar,
}

impl Model {
    fn new(scenario: Scenario) -> Model {
        Model {
            state: State::new(),
            scenario,
            forwards_asked: AtomicUsize::new(0),
            forwards_passed: AtomicUsize::new(0),
            word_finished: AtomicUsize::new(0),
            delivers: AtomicUsize::new(0),
            readiness: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            consumer_thread: thread::current().id(),
            consumer_effects: AtomicUsize::new(0),
            cancel_asked: Mutex::new(false),
            cancel_cond: Condvar::new(),
            helper: Mutex::new(HelperQueue::default()),
            helper_cond: Condvar::new(),
        }
    }

    /// The backend's side: ends the wait exactly once.
    fn backend(&self) {
        let outcome = match self.scenario.finish {
            Finish::With(outcome) => outcome,
            Finish::OnCancel => {
                let mut asked = self.cancel_asked.lock().unwrap();
                while !*asked {
                    asked = self.cancel_cond.wait(asked).unwrap();
                }
                drop(asked);
                // As `backend::outcome_of` maps `-ECANCELED`.
                if self.state.cancel_requested() {
                    Outcome::Cancelled
                } else {
                    Outcome::Spurious
                }
            }
        };
        let errno = if outcome == Outcome::Failed { ERRNO } else { 0 };
        if self.scenario.kernel_signals {
            // The linked write ran (its completion is what finishes the
            // waiter), whatever the wait's result.
            self.readiness.fetch_add(1, SeqCst);
        }
        self.state.finish(self, outcome, errno);
    }

    /// The thread backend's helper: passes on queued forwards until closed.
    fn helper(&self) {
        loop {
            let mut queue = self.helper.lock().unwrap();
            while queue.pending == 0 && !queue.closing {
                queue = self.helper_cond.wait(queue).unwrap();
            }
            if queue.pending == 0 {
                return;
            }
            queue.pending -= 1;
            drop(queue);
            self.forwards_passed.fetch_add(1, SeqCst);
            self.state.forwarded();
        }
    }

    fn cancel(&self, sync: bool) {
        self.state.cancel(self, sync);
        self.after_cancel(sync);
        if self.scenario.double_cancel {
            let before = self.consumer_effects.load(SeqCst);
            self.state.cancel(self, sync);
            assert_eq!(
                self.consumer_effects.load(SeqCst),
                before,
                "a second cancel did something"
            );
            self.after_cancel(sync);
        }
    }

    fn after_cancel(&self, sync: bool) {
        self.closed.store(true, SeqCst);
        let bits = self.state.bits();
        if sync {
            assert_ne!(
                bits & DELIVERED,
                0,
                "cancel(sync) returned before DELIVERED"
            );
            assert_eq!(
                self.word_finished.load(SeqCst),
                1,
                "cancel(sync) returned before the backend let go of the word"
            );
        }
        if self.delivers.load(SeqCst) == 1 {
            // The backend finished first: the consumer's cancel forwarded a
            // consumed wake itself, and must have waited for it.
            if self.scenario.outcome() == Outcome::Woken {
                assert_eq!(
                    self.forwards_passed.load(SeqCst),
                    1,
                    "cancel returned before its forward was passed on"
                );
            }
            if self.scenario.consumer.eventfd() {
                assert_eq!(self.readiness.load(SeqCst), 0, "stale eventfd readiness");
            }
        }
    }

    /// The consumer's side. Returns the result it observed, if it did.
    fn consumer(&self) -> Option<Result<(), i32>> {
        let scenario = self.scenario;
        let looked = if scenario.consumer.looks() && self.state.is_done() {
            let result = self.state.result();
            assert!(result.is_some(), "done without a result");
            result
        } else {
            None
        };
        match (scenario.consumer, looked) {
            (Consumer::EventFd, Some(_)) => {
                self.state.settle(self);
                self.closed.store(true, SeqCst);
                assert_eq!(self.readiness.load(SeqCst), 0, "ack left readiness");
            }
            (Consumer::Future, Some(_)) => {}
            (Consumer::Future | Consumer::FutureDropped, None) => self.cancel(false),
            (Consumer::EventFd | Consumer::EventFdCancel, None) => self.cancel(true),
            (Consumer::FutureDropped | Consumer::EventFdCancel, Some(_)) => unreachable!(),
        }
        looked
    }

    /// Checks once every thread is done.
    fn check_end(&self, observed: Option<Result<(), i32>>) {
        let scenario = self.scenario;
        let outcome = scenario.outcome();
        let bits = self.state.bits();
        assert_ne!(bits & DONE, 0);
        assert_ne!(bits & DELIVERED, 0);
        assert_eq!(self.word_finished.load(SeqCst), 1, "word finished != once");
        let delivers = self.delivers.load(SeqCst);
        assert!(delivers <= 1, "delivered {delivers} times");
        let asked = self.forwards_asked.load(SeqCst);
        let passed = self.forwards_passed.load(SeqCst);
        assert_eq!(asked, passed, "a queued forward was never passed on");
        if scenario.by != ForwardBy::Direct {
            assert_eq!(bits & FORWARDED != 0, passed == 1);
        }
        if outcome == Outcome::Woken {
            assert_eq!(
                usize::from(observed.is_some()) + passed,
                1,
                "a consumed wake was observed {} time(s) and forwarded {passed} time(s)",
                usize::from(observed.is_some())
            );
        } else {
            assert_eq!(passed, 0, "{outcome:?} was forwarded");
        }
        if let Some(result) = observed {
            assert_eq!(delivers, 1, "an observed completion was never delivered");
            let expected = if outcome == Outcome::Failed {
                Err(ERRNO)
            } else {
                Ok(())
            };
            assert_eq!(result, expected, "wrong result observed");
        }
        if scenario.consumer.eventfd() {
            assert_eq!(self.readiness.load(SeqCst), 0, "stale eventfd readiness");
        }
    }
}

impl Model {
    /// Counts an effect caused by the consumer's thread.
    fn effect(&self) {
        if thread::current().id() == self.consumer_thread {
            self.consumer_effects.fetch_add(1, SeqCst);
        }
    }
}

impl Effects for Model {
    fn forward(&self) -> Forward {
        self.effect();
        self.forwards_asked.fetch_add(1, SeqCst);
        match self.scenario.by {
            ForwardBy::Inline => {
                self.forwards_passed.fetch_add(1, SeqCst);
                self.state.forwarded();
                Forward::Queued
            }
            ForwardBy::Helper => {
                self.helper.lock().unwrap().pending += 1;
                self.helper_cond.notify_one();
                Forward::Queued
            }
            ForwardBy::Direct => {
                self.forwards_passed.fetch_add(1, SeqCst);
                Forward::Done
            }
        }
    }

    fn wait_finished(&self) {
        self.effect();
        self.word_finished.fetch_add(1, SeqCst);
    }

    fn deliver(&self) {
        self.effect();
        assert!(
            !self.closed.load(SeqCst),
            "delivered after the consumer's cancel/ack returned"
        );
        self.delivers.fetch_add(1, SeqCst);
        if self.scenario.kernel_signals {
            // Nothing to add: the kernel's write is there already, and
            // nobody drains before `DELIVERED`.
            assert_eq!(
                self.readiness.load(SeqCst),
                1,
                "the kernel's eventfd write is not visible at delivery"
            );
        } else if self.scenario.consumer.eventfd() {
            self.readiness.fetch_add(1, SeqCst);
        }
    }

    fn discard(&self) {
        self.effect();
        if self.scenario.kernel_signals {
            self.readiness.store(0, SeqCst);
        }
    }

    fn drain(&self) {
        self.effect();
        if self.scenario.consumer.eventfd() {
            self.readiness.store(0, SeqCst);
        }
    }

    fn request_cancel(&self) -> bool {
        self.effect();
        *self.cancel_asked.lock().unwrap() = true;
        self.cancel_cond.notify_one();
        true
    }
}

/// Explores every interleaving of `scenario` (preemption bound 3 unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise).
fn check(scenario: Scenario) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let started = Instant::now();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let model = Arc::new(Model::new(scenario));
        let helper = (scenario.by == ForwardBy::Helper).then(|| {
            let model = Arc::clone(&model);
            thread::spawn(move || model.helper())
        });
        let backend = {
            let model = Arc::clone(&model);
            thread::spawn(move || model.backend())
        };
        let backend = if scenario.backend_first {
            backend.join().unwrap();
            None
        } else {
            Some(backend)
        };
        let observed = model.consumer();
        if let Some(backend) = backend {
            backend.join().unwrap();
        }
        if let Some(helper) = helper {
            model.helper.lock().unwrap().closing = true;
            model.helper_cond.notify_one();
            helper.join().unwrap();
        }
        model.check_end(observed);
    });
    RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "loom: {scenario:?}: {} interleavings in {:.2?}",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
}

use Consumer::{EventFd, EventFdCancel, Future, FutureDropped};
use ForwardBy::{Direct, Helper, Inline};

#[test]
fn loom_woken_vs_cancel_sync() {
    for by in [Inline, Helper] {
        for consumer in [EventFd, EventFdCancel] {
            check(Scenario::new(Finish::With(Outcome::Woken), consumer, by));
        }
    }
}

#[test]
fn loom_woken_vs_cancel_async() {
    for by in [Inline, Helper] {
        for consumer in [Future, FutureDropped] {
            check(Scenario::new(Finish::With(Outcome::Woken), consumer, by));
        }
    }
}

#[test]
fn loom_woken_vs_cancel_without_backend_forward() {
    for consumer in [EventFdCancel, FutureDropped] {
        check(Scenario::new(
            Finish::With(Outcome::Woken),
            consumer,
            Direct,
        ));
    }
}

#[test]
fn loom_no_wake_outcomes_vs_cancel() {
    for outcome in [Outcome::Mismatch, Outcome::Failed, Outcome::Spurious] {
        for consumer in [EventFd, Future] {
            check(Scenario::new(Finish::With(outcome), consumer, Inline));
        }
    }
}

#[test]
fn loom_cancelled_on_request() {
    for consumer in [EventFdCancel, FutureDropped] {
        check(Scenario::new(Finish::OnCancel, consumer, Helper));
    }
}

#[test]
fn loom_double_cancel() {
    for consumer in [EventFdCancel, FutureDropped] {
        let mut scenario = Scenario::new(Finish::With(Outcome::Woken), consumer, Helper);
        scenario.double_cancel = true;
        check(scenario);
    }
    let mut scenario = Scenario::new(Finish::OnCancel, EventFdCancel, Inline);
    scenario.double_cancel = true;
    check(scenario);
}

#[test]
fn loom_cancel_after_unobserved_completion() {
    for by in [Inline, Helper] {
        for consumer in [EventFdCancel, FutureDropped] {
            for outcome in [Outcome::Woken, Outcome::Mismatch] {
                let mut scenario = Scenario::new(Finish::With(outcome), consumer, by);
                scenario.backend_first = true;
                check(scenario);
            }
        }
    }
}

#[test]
fn loom_kernel_signalled_eventfd_vs_cancel() {
    for consumer in [EventFd, EventFdCancel] {
        for finish in [
            Finish::With(Outcome::Woken),
            Finish::OnCancel,
            Finish::With(Outcome::Mismatch),
        ] {
            check(Scenario::kernel_signalled(finish, consumer));
        }
    }
}

#[test]
fn loom_kernel_signalled_eventfd_double_cancel() {
    for finish in [Finish::With(Outcome::Woken), Finish::OnCancel] {
        let mut scenario = Scenario::kernel_signalled(finish, EventFdCancel);
        scenario.double_cancel = true;
        check(scenario);
    }
}

#[test]
fn loom_kernel_signalled_eventfd_after_unobserved_completion() {
    for consumer in [EventFd, EventFdCancel] {
        for outcome in [Outcome::Woken, Outcome::Mismatch] {
            let mut scenario = Scenario::kernel_signalled(Finish::With(outcome), consumer);
            scenario.backend_first = true;
            check(scenario);
        }
    }
}
