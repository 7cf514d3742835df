//! How many lines a script may log: a burst, then so many a second ([`LogRate`], a token
//! bucket per version of a script). A script that logs more (a loop around `agent.log`) has its
//! lines dropped, and what was dropped is said at most every [`SAY_EVERY`]: the log, its disk
//! and whoever reads it are every script's and the agent's.

use std::time::{Duration, Instant};

/// How many lines a script may log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRate {
    /// Lines at once (a burst of events, each logged).
    pub burst: u32,
    /// Lines a second for as long as it likes.
    pub per_sec: u32,
}

impl LogRate {
    /// What `run` allows each script (README "Logs").
    pub const DEFAULT: LogRate = LogRate { burst: 10_000, per_sec: 100 };
}
/// How often dropped lines are said, at most (the notice must not be a flood of its own).
pub(crate) const SAY_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct LogBudget {
    rate: LogRate,
    tokens: f64,
    at: Instant,
    dropped: u64,
    said_at: Option<Instant>,
}

/// Whether a line is logged, and how many dropped lines to say now (`Some` at most every
/// [`SAY_EVERY`], the first dropped line said at once).
#[derive(Debug, PartialEq)]
pub(crate) struct Admit {
    pub(crate) pass: bool,
    pub(crate) say_dropped: Option<u64>,
}

impl LogBudget {
    pub(crate) fn new(rate: LogRate, now: Instant) -> LogBudget {
        LogBudget { rate, tokens: f64::from(rate.burst), at: now, dropped: 0, said_at: None }
    }

    pub(crate) fn rate(&self) -> LogRate {
        self.rate
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_sec)).min(f64::from(self.rate.burst));
        let pass = self.tokens >= 1.0;
        if pass {
            self.tokens -= 1.0;
        } else {
            self.dropped += 1;
        }
        let due = self.said_at.is_none_or(|t| now.saturating_duration_since(t) >= SAY_EVERY);
        let say_dropped = (self.dropped > 0 && due).then(|| {
            self.said_at = Some(now);
            std::mem::take(&mut self.dropped)
        });
        Admit { pass, say_dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: Admit = Admit { pass: true, say_dropped: None };
    const DROP: Admit = Admit { pass: false, say_dropped: None };

    #[test]
    fn a_burst_passes_then_lines_are_dropped_until_time_refills_the_budget_and_drops_are_said_every_10_s() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(LogRate::DEFAULT, t0);
        for _ in 0..10_000 {
            assert_eq!(b.admit(t0), PASS);
        }
        // The first dropped line is said at once.
        assert_eq!(b.admit(t0), Admit { pass: false, say_dropped: Some(1) });
        for _ in 0..4 {
            assert_eq!(b.admit(t0), DROP);
        }
        // 100 a second: after 50 ms, five lines' worth; the drops not said again yet.
        let t1 = t0 + Duration::from_millis(50);
        for _ in 0..5 {
            assert_eq!(b.admit(t1), PASS);
        }
        assert_eq!(b.admit(t1), DROP);
        // 10 s on: the budget refilled, and the five dropped since are said with the next line.
        let t2 = t0 + SAY_EVERY;
        assert_eq!(b.admit(t2), Admit { pass: true, say_dropped: Some(5) });
        // A long quiet refills the burst, no more.
        let t3 = t2 + Duration::from_secs(3600);
        for _ in 0..9_999 {
            assert_eq!(b.admit(t3), PASS);
        }
        assert_eq!(b.admit(t3), PASS);
        assert_eq!(b.admit(t3), Admit { pass: false, say_dropped: Some(1) });
    }
}
