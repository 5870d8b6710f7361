//! Rate limits: requests per minute, tokens per minute and concurrent requests, per scope
//! (`key:NAME`, `team:NAME`, `model:NAME`, `route:NAME`, ...).
//!
//! Requests and tokens use GCRA in its leaky-bucket form, in exact integers: a bucket holds
//! `level` in units of `amount × period_ms`, drains `limit` units per millisecond and admits
//! `n` when `level + n × period_ms ≤ limit × period_ms`. A full bucket (`limit` at once) is
//! the burst; after that one unit comes back every `period / limit`. No float, no rounding:
//! with a limit of 50 per minute exactly 50 of 200 simultaneous requests pass.
//!
//! A request names every scope it falls under and is admitted by all or by none, under one
//! lock, so concurrent callers can never overshoot a limit. Token limits are charged with
//! an estimate at admission and settled with the actual usage afterwards (`settle`); a
//! request larger than a whole minute's tokens is refused as too large, not queued forever.
//!
//! The Redis script in `python/hybridfast/security/ratelimit.py` implements the same
//! arithmetic for limits shared by several instances.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::error::{CoreError, CoreResult};

/// The window of `rpm` and `tpm`.
pub const PERIOD_MS: u64 = 60_000;

/// The limits of one scope; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u64>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
    Parallel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Parallel => "parallel",
        }
    }
}

/// What the caller reports in `x-ratelimit-*` headers: the tightest bucket of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// The answer to `acquire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// When refused: the scope and limit that refused, and how long to wait (0 for
    /// parallel limits: retry when a running request ends; `u64::MAX` if it can never fit).
    pub denied_scope: Option<String>,
    pub denied_kind: Option<Kind>,
    pub retry_after_ms: u64,
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// A GCRA bucket in exact integers (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    level: u128,
    updated_ms: u64,
}

impl Bucket {
    fn drain(&mut self, limit: u64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.updated_ms).min(PERIOD_MS);
        self.level = self
            .level
            .saturating_sub(u128::from(elapsed) * u128::from(limit));
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    fn capacity(limit: u64) -> u128 {
        u128::from(limit) * u128::from(PERIOD_MS)
    }

    /// How long until `n` more fit (0: they fit now).
    fn wait_ms(&self, limit: u64, n: u64) -> u64 {
        let need = self.level + u128::from(n) * u128::from(PERIOD_MS);
        let capacity = Self::capacity(limit);
        if need <= capacity {
            return 0;
        }
        let over = need - capacity;
        u64::try_from(over.div_ceil(u128::from(limit))).unwrap_or(u64::MAX)
    }

    fn window(&self, limit: u64) -> Window {
        let capacity = Self::capacity(limit);
        let free = capacity.saturating_sub(self.level);
        Window {
            limit,
            remaining: u64::try_from(free / u128::from(PERIOD_MS)).unwrap_or(u64::MAX),
            reset_ms: u64::try_from(self.level.div_ceil(u128::from(limit))).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Default)]
struct Scope {
    limits: Limits,
    requests: Bucket,
    tokens: Bucket,
    in_flight: u64,
}

/// Every scope's limits and counters, behind one lock.
#[derive(Debug, Default)]
pub struct RateLimiter {
    scopes: Mutex<HashMap<String, Scope>>,
}

fn tighter(current: Option<Window>, candidate: Window) -> Option<Window> {
    match current {
        Some(c) if c.remaining <= candidate.remaining => Some(c),
        _ => Some(candidate),
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a scope's limits; counters are kept. A scope with no limit at all
    /// is removed once nothing runs under it.
    pub fn configure(&self, scope: &str, limits: Limits) -> CoreResult<()> {
        for value in [limits.rpm, limits.tpm, limits.max_parallel]
            .into_iter()
            .flatten()
        {
            if value == 0 {
                return Err(CoreError::InvalidArgument(format!(
                    "rate limit of {scope} must be positive (leave it unset for no limit)"
                )));
            }
        }
        let mut scopes = self.scopes.lock();
        let entry = scopes.entry(scope.to_owned()).or_default();
        entry.limits = limits;
        Ok(())
    }

    /// Drops a scope's limits and counters (a revoked key).
    pub fn remove(&self, scope: &str) {
        self.scopes.lock().remove(scope);
    }

    pub fn limits(&self, scope: &str) -> Option<Limits> {
        self.scopes.lock().get(scope).map(|s| s.limits)
    }

    /// Admits one request charging `tokens` (an estimate) under every named scope, or none.
    /// Scopes without configured limits are ignored.
    pub fn acquire(&self, scopes: &[String], tokens: u64, now_ms: u64) -> Decision {
        let mut map = self.scopes.lock();
        let mut refused: Option<(String, Kind, u64)> = None;
        for name in scopes {
            let Some(scope) = map.get_mut(name) else {
                continue;
            };
            let limits = scope.limits;
            let mut wait = |kind: Kind, ms: u64| {
                if refused.as_ref().is_none_or(|(_, _, w)| ms > *w) {
                    refused = Some((name.clone(), kind, ms));
                }
            };
            if let Some(max) = limits.max_parallel {
                if scope.in_flight >= max {
                    wait(Kind::Parallel, 0);
                }
            }
            if let Some(rpm) = limits.rpm {
                scope.requests.drain(rpm, now_ms);
                let ms = scope.requests.wait_ms(rpm, 1);
                if ms > 0 {
                    wait(Kind::Requests, ms);
                }
            }
            if let Some(tpm) = limits.tpm {
                scope.tokens.drain(tpm, now_ms);
                let ms = if tokens > tpm {
                    u64::MAX
                } else {
                    scope.tokens.wait_ms(tpm, tokens)
                };
                if ms > 0 {
                    wait(Kind::Tokens, ms);
                }
            }
        }
        let allowed = refused.is_none();
        let mut requests = None;
        let mut token_window = None;
        for name in scopes {
            let Some(scope) = map.get_mut(name) else {
                continue;
            };
            let limits = scope.limits;
            if allowed {
                scope.in_flight += 1;
                if let Some(rpm) = limits.rpm {
                    scope.requests.level += u128::from(PERIOD_MS);
                    requests = tighter(requests, scope.requests.window(rpm));
                }
                if let Some(tpm) = limits.tpm {
                    scope.tokens.level += u128::from(tokens) * u128::from(PERIOD_MS);
                    token_window = tighter(token_window, scope.tokens.window(tpm));
                }
            } else {
                if let Some(rpm) = limits.rpm {
                    requests = tighter(requests, scope.requests.window(rpm));
                }
                if let Some(tpm) = limits.tpm {
                    token_window = tighter(token_window, scope.tokens.window(tpm));
                }
            }
        }
        let (denied_scope, denied_kind, retry_after_ms) = match refused {
            Some((scope, kind, ms)) => (Some(scope), Some(kind), ms),
            None => (None, None, 0),
        };
        Decision {
            allowed,
            denied_scope,
            denied_kind,
            retry_after_ms,
            requests,
            tokens: token_window,
        }
    }

    /// A request admitted by `acquire` ended: its parallel slot is freed, and its token
    /// charge corrected from the estimate to what it actually used.
    pub fn settle(&self, scopes: &[String], estimated: u64, actual: u64, now_ms: u64) {
        let mut map = self.scopes.lock();
        for name in scopes {
            let Some(scope) = map.get_mut(name) else {
                continue;
            };
            scope.in_flight = scope.in_flight.saturating_sub(1);
            if let Some(tpm) = scope.limits.tpm {
                scope.tokens.drain(tpm, now_ms);
                let period = u128::from(PERIOD_MS);
                if actual >= estimated {
                    scope.tokens.level += u128::from(actual - estimated) * period;
                } else {
                    let refund = u128::from(estimated - actual) * period;
                    scope.tokens.level = scope.tokens.level.saturating_sub(refund);
                }
            }
        }
    }

    /// Requests running under a scope now.
    pub fn in_flight(&self, scope: &str) -> u64 {
        self.scopes.lock().get(scope).map_or(0, |s| s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn burst_is_exactly_the_limit_then_one_per_interval() {
        let rl = RateLimiter::new();
        rl.configure(
            "key:a",
            Limits {
                rpm: Some(50),
                ..Limits::default()
            },
        )
        .unwrap();
        let s = scopes(&["key:a"]);
        let passed = (0..200)
            .filter(|_| rl.acquire(&s, 0, 1_000).allowed)
            .count();
        assert_eq!(passed, 50);
        let refused = rl.acquire(&s, 0, 1_000);
        assert_eq!(refused.retry_after_ms, 1_200);
        assert_eq!(refused.denied_kind, Some(Kind::Requests));
        assert!(!rl.acquire(&s, 0, 2_199).allowed);
        assert!(rl.acquire(&s, 0, 2_200).allowed);
        assert!(!rl.acquire(&s, 0, 2_200).allowed);
    }

    #[test]
    fn all_scopes_or_none() {
        let rl = RateLimiter::new();
        let one = Limits {
            rpm: Some(1),
            ..Limits::default()
        };
        let many = Limits {
            rpm: Some(100),
            ..Limits::default()
        };
        rl.configure("key:a", many).unwrap();
        rl.configure("team:t", one).unwrap();
        assert!(rl.acquire(&scopes(&["key:a", "team:t"]), 0, 0).allowed);
        let d = rl.acquire(&scopes(&["key:a", "team:t"]), 0, 0);
        assert!(!d.allowed);
        assert_eq!(d.denied_scope.as_deref(), Some("team:t"));
        // The refused request charged nothing to the key's bucket.
        assert_eq!(d.requests.unwrap().remaining, 0);
        let key_only = rl.acquire(&scopes(&["key:a"]), 0, 0);
        assert_eq!(key_only.requests.unwrap().remaining, 98);
    }

    #[test]
    fn tokens_settle_with_actual_usage() {
        let rl = RateLimiter::new();
        rl.configure(
            "model:m",
            Limits {
                tpm: Some(1_000),
                ..Limits::default()
            },
        )
        .unwrap();
        let s = scopes(&["model:m"]);
        assert!(rl.acquire(&s, 600, 0).allowed);
        assert!(!rl.acquire(&s, 600, 0).allowed);
        rl.settle(&s, 600, 100, 0);
        let d = rl.acquire(&s, 600, 0);
        assert!(d.allowed);
        assert_eq!(d.tokens.unwrap().remaining, 300);
        rl.settle(&s, 600, 900, 0);
        assert_eq!(rl.acquire(&s, 1, 0).tokens.unwrap().remaining, 0);
        let too_large = rl.acquire(&s, 1_001, 600_000);
        assert!(!too_large.allowed);
        assert_eq!(too_large.retry_after_ms, u64::MAX);
    }

    #[test]
    fn parallel_slots_come_back_on_settle() {
        let rl = RateLimiter::new();
        rl.configure(
            "key:a",
            Limits {
                max_parallel: Some(2),
                ..Limits::default()
            },
        )
        .unwrap();
        let s = scopes(&["key:a"]);
        assert!(rl.acquire(&s, 0, 0).allowed);
        assert!(rl.acquire(&s, 0, 0).allowed);
        let d = rl.acquire(&s, 0, 0);
        assert_eq!(d.denied_kind, Some(Kind::Parallel));
        rl.settle(&s, 0, 0, 0);
        assert!(rl.acquire(&s, 0, 0).allowed);
        assert_eq!(rl.in_flight("key:a"), 2);
    }

    #[test]
    fn zero_limit_is_refused() {
        let rl = RateLimiter::new();
        let err = rl.configure(
            "key:a",
            Limits {
                rpm: Some(0),
                ..Limits::default()
            },
        );
        assert!(matches!(err, Err(CoreError::InvalidArgument(_))));
    }

    proptest::proptest! {
        /// GCRA's guarantee: over any span of `w` ms, at most `limit` (the burst) plus what
        /// drained meanwhile (`limit * w / 60000`) requests are admitted.
        #[test]
        fn never_more_than_burst_plus_refill(
            limit in 1u64..200,
            gaps in proptest::collection::vec(0u64..3_000, 1..400),
        ) {
            let rl = RateLimiter::new();
            rl.configure("s", Limits { rpm: Some(limit), ..Limits::default() }).unwrap();
            let s = vec!["s".to_owned()];
            let mut now = 1_000u64;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if rl.acquire(&s, 0, now).allowed {
                    admitted.push(now);
                }
            }
            for (i, start) in admitted.iter().enumerate() {
                for (j, end) in admitted.iter().enumerate().skip(i) {
                    let span = end - start;
                    let bound = limit + (limit * span) / PERIOD_MS;
                    proptest::prop_assert!((j - i + 1) as u64 <= bound);
                }
            }
        }
    }

    #[test]
    fn concurrent_threads_never_overshoot() {
        use std::sync::Arc;
        let rl = Arc::new(RateLimiter::new());
        rl.configure(
            "key:a",
            Limits {
                rpm: Some(37),
                ..Limits::default()
            },
        )
        .unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || {
                    let s = vec!["key:a".to_owned()];
                    (0..50).filter(|_| rl.acquire(&s, 0, 5).allowed).count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 37);
    }
}
