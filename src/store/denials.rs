//! Refused calls in the audit trail, coalesced: the refusals of one actor
//! for one action and one reason, made within [`WINDOW`] seconds of the
//! first of them, are one event with a count (the first refusal's time and
//! target, the last refusal's time), so that an actor repeating a refused
//! call cannot grow the store with every try. A refusal whose target names
//! an existing member or token of the organization joins only the events
//! of that same target: a refusal naming nothing known (which an actor can
//! repeat with endless made-up names) cannot hide it. The events kept apart
//! so are bounded by the organization's own members and tokens.
//!
//! The event is written when its first refusal is made; its count is
//! written again when it reaches a power of two and otherwise at most once
//! a clock second, and whatever is left by `flush`, `purge_expired` and
//! `close`. The audit trail read in the meantime shows the count in memory.
//! All of it is lazily durable, as refusals always were.

use std::collections::HashMap;

use super::Inner;
use crate::codec::EventRecord;

/// Refusals within this many seconds of an event's first one join it.
pub(crate) const WINDOW: u64 = 3600;
/// Events whose count is kept in memory at most; past it, those whose
/// window is over are let go first, then the oldest.
const MAX_PENDING: usize = 4096;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    org: String,
    actor: String,
    action: String,
    outcome: String,
    /// The target, for a refusal naming an existing member or token; none
    /// for the rest.
    named: Option<String>,
}

struct Pending {
    /// The number the event is stored under (the backend's).
    stored: u64,
    /// The event with its current count and last time.
    event: EventRecord,
    /// The count as last written.
    written: u64,
    /// When (clock seconds) it was last written.
    written_at: u64,
}

/// The coalesced refusals whose window is open or whose count is not yet
/// written.
#[derive(Default)]
pub(super) struct Denials {
    open: HashMap<Key, Pending>,
}

fn key_of(e: &EventRecord, known: bool) -> Key {
    Key {
        org: e.org.clone(),
        actor: e.actor.clone(),
        action: e.action.clone(),
        outcome: e.outcome.clone(),
        named: if known { e.target.clone() } else { None },
    }
}

impl Inner {
    /// Audits a refusal (its strings already cut to size): joins the open
    /// event of the same actor, action and reason (and, when `known`, the
    /// same target), or starts one. Storage errors are dropped (the
    /// refusal is answered all the same).
    pub(super) fn audit_denial(&self, ev: EventRecord, known: bool) {
        let now = ev.at;
        let key = key_of(&ev, known);
        let mut d = self.denials.lock();
        if let Some(p) = d.open.get_mut(&key) {
            if now >= p.event.at && now - p.event.at < WINDOW {
                p.event.count += 1;
                p.event.last_at = p.event.last_at.max(now);
                if p.event.count.is_power_of_two() || now > p.written_at {
                    self.write_count(p, now);
                }
                return;
            }
            // Its window is over: it keeps its count, a new event starts.
            if let Some(mut old) = d.open.remove(&key) {
                self.write_count(&mut old, now);
            }
        }
        if d.open.len() >= MAX_PENDING {
            let mut done: Vec<Key> = Vec::new();
            for (k, p) in d.open.iter_mut() {
                if now < p.event.at || now - p.event.at >= WINDOW {
                    self.write_count(p, now);
                    done.push(k.clone());
                }
            }
            if done.is_empty() {
                if let Some((k, _)) = d.open.iter().min_by_key(|(_, p)| p.event.at) {
                    done.push(k.clone());
                }
            }
            for k in done {
                if let Some(mut p) = d.open.remove(&k) {
                    self.write_count(&mut p, now);
                }
            }
        }
        let Ok(stored) = self.backend.put_event(&ev, None) else {
            return;
        };
        self.lazy_written();
        d.open.insert(
            key,
            Pending {
                stored,
                event: ev,
                written: 1,
                written_at: now,
            },
        );
    }

    /// Writes an event's count if it grew since it was last written.
    fn write_count(&self, p: &mut Pending, now: u64) {
        if p.written == p.event.count {
            return;
        }
        if self.backend.put_event(&p.event, Some(p.stored)).is_ok() {
            p.written = p.event.count;
            p.written_at = now;
            self.lazy_written();
        }
    }

    /// A lazy write made outside [`Inner::commit`].
    pub(super) fn lazy_written(&self) {
        let t = self.flusher.ticket();
        let _ = self.lazy(t);
    }

    /// Writes every count not yet written, and lets go of the events
    /// whose window is over or that began at or before `drop_before`
    /// (about to be purged).
    pub(super) fn write_denials(&self, drop_before: u64) {
        let now = self.now();
        let mut d = self.denials.lock();
        d.open.retain(|_, p| {
            self.write_count(p, now);
            let over = now < p.event.at || now - p.event.at >= WINDOW;
            let unwritten = p.written != p.event.count;
            unwritten || !(over || p.event.at <= drop_before)
        });
    }

    /// Puts the counts kept in memory into events of `org` read from
    /// storage (the newest, not yet written).
    pub(super) fn overlay_denials(&self, org: &str, events: &mut [EventRecord]) {
        let d = self.denials.lock();
        let counts: HashMap<u64, (u64, u64)> = d
            .open
            .iter()
            .filter(|(k, _)| k.org == org)
            .map(|(_, p)| (p.stored, (p.event.count, p.event.last_at)))
            .collect();
        if counts.is_empty() {
            return;
        }
        for e in events {
            if let Some(&(count, last_at)) = counts.get(&e.seq) {
                if count > e.count {
                    e.count = count;
                    e.last_at = last_at;
                }
            }
        }
    }
}
