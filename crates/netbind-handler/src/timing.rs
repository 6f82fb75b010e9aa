//! Where a setup's time goes, step by step, reported with the setup (the phase-1 benchmark
//! prints it). Steps are coarse on purpose: each one is a distinct kind of work (parsing,
//! a netlink exchange, the nftables transaction, a file write), so a regression shows which.

use std::time::Instant;

/// One step and how long it took, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepTime {
    pub step: &'static str,
    pub micros: u64,
    /// Ran beside the other steps (on a thread of its own): not part of their sum.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub beside: bool,
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so that a
/// caller can place this process's marks between its own spawn and reap (the phase-1
/// benchmark splits the time outside the steps that way).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Where a process's run sits on `monotonic_ns`'s clock: `main` entered (set by the binary;
/// a library caller has none), the first step started, the report built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClockMarks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_ns: Option<u64>,
    pub steps_started_ns: u64,
    pub report_ns: u64,
}

/// A clock that charges the time since the previous mark to the step being marked.
#[derive(Debug)]
pub struct StepClock {
    last: Instant,
    started_ns: u64,
    steps: Vec<StepTime>,
}

impl Default for StepClock {
    fn default() -> Self {
        StepClock::new()
    }
}

impl StepClock {
    pub fn new() -> StepClock {
        StepClock {
            last: Instant::now(),
            started_ns: monotonic_ns(),
            steps: Vec::new(),
        }
    }

    /// The steps, and the clock marks of their start and of now (the report being built).
    pub fn finish(self) -> (Vec<StepTime>, ClockMarks) {
        let marks = ClockMarks {
            main_ns: None,
            steps_started_ns: self.started_ns,
            report_ns: monotonic_ns(),
        };
        (self.steps, marks)
    }

    /// Ends `step` now. A step marked twice (e.g. one per link) accumulates.
    pub fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        let micros = u64::try_from((now - self.last).as_micros()).unwrap_or(u64::MAX);
        self.last = now;
        match self.steps.iter_mut().find(|done| done.step == step) {
            Some(done) => done.micros = done.micros.saturating_add(micros),
            None => self.steps.push(StepTime {
                step,
                micros,
                beside: false,
            }),
        }
    }

    /// Records `step` as taking `took` without moving the clock: work that ran beside the
    /// marked steps (on a thread of its own).
    pub fn beside(&mut self, step: &'static str, took: std::time::Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.steps.push(StepTime {
            step,
            micros,
            beside: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_marked_twice_accumulates_in_first_mark_order() {
        let mut clock = StepClock::new();
        clock.mark("a");
        std::thread::sleep(std::time::Duration::from_millis(2));
        clock.mark("b");
        clock.beside("c", std::time::Duration::from_millis(5));
        clock.mark("a");
        let (steps, marks) = clock.finish();
        assert!(
            marks.steps_started_ns > 0 && marks.steps_started_ns + 2_000_000 <= marks.report_ns,
            "{marks:?}"
        );
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(steps[1].micros >= 2000, "{steps:?}");
        // A step beside the others is recorded as given, apart from them.
        assert_eq!((steps[2].micros, steps[2].beside), (5000, true));
        assert!(!steps[0].beside && !steps[1].beside);
    }
}
