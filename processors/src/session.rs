//! Sessionization: a visitor's events belong to one session while they are less than the
//! inactivity timeout (30 minutes) apart. Late events join the session they fall into, or
//! start their own. Session ids are derived from the session's first event, so the same
//! events always get the same ids; state is rebuilt from the store after a restart.

use crate::ids::fnv64;
use projections::SessionTail;
use std::collections::HashMap;

/// Inactivity that ends a session.
pub const SESSION_TIMEOUT_MS: i64 = projections::SESSION_GAP_MS;
/// Sessions remembered per visitor (for late events); older ones are forgotten first.
const SPANS_PER_VISITOR: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    id: u64,
    first: i64,
    last: i64,
}

/// Per-visitor session state.
#[derive(Debug, Default)]
pub struct Sessionizer {
    visitors: HashMap<u64, Vec<Span>>,
}

fn visitor_slot(website_id: &str, visitor: u64) -> u64 {
    fnv64(&[website_id.as_bytes(), &visitor.to_le_bytes()])
}

impl Sessionizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session of an event at `ts_ms`; `event_key` seeds the id of a new session.
    pub fn assign(&mut self, website_id: &str, visitor: u64, ts_ms: i64, event_key: u128) -> u64 {
        let spans = self
            .visitors
            .entry(visitor_slot(website_id, visitor))
            .or_default();
        if let Some(s) = spans
            .iter_mut()
            .find(|s| ts_ms >= s.first - SESSION_TIMEOUT_MS && ts_ms <= s.last + SESSION_TIMEOUT_MS)
        {
            s.first = s.first.min(ts_ms);
            s.last = s.last.max(ts_ms);
            return s.id;
        }
        let id = fnv64(&[
            website_id.as_bytes(),
            &visitor.to_le_bytes(),
            &event_key.to_le_bytes(),
        ]);
        spans.push(Span {
            id,
            first: ts_ms,
            last: ts_ms,
        });
        if spans.len() > SPANS_PER_VISITOR {
            spans.sort_by_key(|s| s.last);
            spans.remove(0);
        }
        id
    }

    /// Restores state from sessions already stored.
    pub fn warm(&mut self, tails: &[SessionTail]) {
        for t in tails {
            let spans = self
                .visitors
                .entry(visitor_slot(&t.website_id, t.visitor))
                .or_default();
            match spans.iter_mut().find(|s| s.id == t.session) {
                Some(s) => {
                    s.first = s.first.min(t.first_ms);
                    s.last = s.last.max(t.last_ms);
                }
                None => spans.push(Span {
                    id: t.session,
                    first: t.first_ms,
                    last: t.last_ms,
                }),
            }
        }
    }

    /// Forgets visitors whose newest session ended before `before_ms`.
    pub fn prune(&mut self, before_ms: i64) {
        self.visitors
            .retain(|_, spans| spans.iter().any(|s| s.last >= before_ms));
    }

    pub fn visitors(&self) -> usize {
        self.visitors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000;

    #[test]
    fn inactivity_splits_sessions() {
        let mut s = Sessionizer::new();
        let a = s.assign("w", 1, 0, 1);
        assert_eq!(s.assign("w", 1, 29 * MIN, 2), a);
        assert_eq!(
            s.assign("w", 1, 58 * MIN, 3),
            a,
            "29 minutes after the last event"
        );
        let b = s.assign("w", 1, 89 * MIN, 4);
        assert_ne!(a, b, "31 minutes of inactivity");
        assert_ne!(s.assign("w", 2, 0, 5), a, "other visitor");
        assert_ne!(
            s.assign("other-site", 1, 0, 6),
            a,
            "same visitor on another site"
        );
    }

    #[test]
    fn late_events_join_their_session_or_start_one() {
        let mut s = Sessionizer::new();
        let now = 10_000 * MIN;
        let current = s.assign("w", 1, now, 1);
        let late = s.assign("w", 1, now - 3 * 24 * 60 * MIN, 2);
        assert_ne!(current, late);
        assert_eq!(s.assign("w", 1, now - 3 * 24 * 60 * MIN + 5 * MIN, 3), late);
        assert_eq!(s.assign("w", 1, now + MIN, 4), current);
    }

    #[test]
    fn ids_are_deterministic_and_survive_warm_restart() {
        let mut a = Sessionizer::new();
        let id = a.assign("w", 7, 1000, 42);
        let mut b = Sessionizer::new();
        assert_eq!(b.assign("w", 7, 1000, 42), id);
        let mut c = Sessionizer::new();
        c.warm(&[SessionTail {
            website_id: "w".into(),
            visitor: 7,
            session: id,
            first_ms: 1000,
            last_ms: 1000,
        }]);
        assert_eq!(c.assign("w", 7, 1000 + 10 * MIN, 99), id);
        c.prune(i64::MAX);
        assert_eq!(c.visitors(), 0);
    }
}
