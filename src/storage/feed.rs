//! What a backend that several service replicas share offers besides
//! [`Backend`](super::Backend): the storage side of keeping each replica's
//! memory in line with the others' writes (the replica module holds the
//! replica side).
//!
//! - a **change feed**: the intents other replicas committed, numbered in
//!   commit order, read "after N" on a connection of its own that can wait
//!   for news;
//! - a **snapshot** of everything memory holds, with the number it reflects,
//!   for a replica that fell behind what the feed still keeps;
//! - a **read-through**: one token memory does not hold, read together with
//!   the feed up to the same point;
//! - the fleet-wide **management lock**.

use std::time::Duration;

use super::LoadSink;
use crate::change::Change;
use crate::codec::{AccessRecord, MemberRecord, OrgPolicyRecord, RefreshRecord};
use crate::error::Result;
use crate::types::ClientInfo;

/// A backend shared by several replicas of a service.
pub(crate) trait SharedBackend: Send + Sync + 'static {
    /// The feed position that the last [`super::Backend::load`] reflects.
    fn loaded_seq(&self) -> u64;
    /// Takes the fleet-wide management lock: no other replica's management
    /// call runs until the returned guard is dropped. Blocks up to the
    /// backend's lock timeout.
    fn manage_lock(&self) -> Result<Box<dyn ManageLock>>;
    /// The feed after `after`, and, read in the same snapshot, the access
    /// record `access` (with its parent) and the refresh record `refresh`
    /// when asked for. Blocks on the database.
    fn read(
        &self,
        after: u64,
        access: Option<&[u8; 16]>,
        refresh: Option<&[u8; 16]>,
    ) -> Result<ReadThrough>;
    /// Everything memory holds, and the feed position it reflects.
    fn snapshot(&self) -> Result<(Snapshot, u64)>;
    /// What a replica's sync thread opens its feeds with. It holds no
    /// connection of the backend's own, so the backend's connections close
    /// as soon as the store lets go of it.
    fn subscriber(&self) -> Subscriber;
}

/// Opens a feed on a connection of its own. Blocks up to the connect
/// timeout.
pub(crate) type Subscriber = Box<dyn Fn() -> Result<Box<dyn ChangeFeed>> + Send>;

/// Held while a management call runs; dropping it releases the lock.
pub(crate) trait ManageLock: Send {}

/// A replica's own reader of the change feed.
pub(crate) trait ChangeFeed: Send {
    /// Asks to be woken by news from now on (else [`ChangeFeed::wait`]
    /// only sleeps: the feed is polled).
    fn listen(&mut self) -> Result<()>;
    /// Whether the feed's connection is known to be gone (a new one is
    /// then needed, from the [`Subscriber`]).
    fn is_closed(&self) -> bool;
    /// As [`SharedBackend::read`], without a read-through.
    fn read(&mut self, after: u64) -> Result<LogBatch>;
    /// As [`SharedBackend::snapshot`].
    fn snapshot(&mut self) -> Result<(Snapshot, u64)>;
    /// Forgets feed entries older than `retention` (a replica further
    /// behind reloads a snapshot). Returns how many went.
    fn prune(&mut self, retention: Duration) -> Result<u64>;
    /// Waits up to `timeout` for news; returns whether some came. Blocks.
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// What one read of the change feed returned, all from one snapshot.
#[derive(Debug, Default)]
pub(crate) struct LogBatch {
    /// Every commit up to this position is reflected.
    pub seq: u64,
    /// Entries up to this position may have been forgotten.
    pub floor: u64,
    /// Each entry after the asked-for position, in order, under its
    /// position (a commit may have several), as the changes memory applies;
    /// `None` for one that could not be decoded.
    pub rows: Vec<(u64, Option<Vec<Change>>)>,
    /// Whether the read stopped short of `seq`.
    pub truncated: bool,
}

impl LogBatch {
    /// The changes after `applied`, or `None` when they cannot be had from
    /// the feed (forgotten, too many, a hole, or an undecodable entry): the
    /// caller then reloads a snapshot.
    ///
    /// This replica's own commits come back too and are applied a second
    /// time, which changes nothing: each management call catches up before
    /// it commits, so what lies between its first and second application is
    /// only other replicas' deletions and access-token revocations, which
    /// commute with it.
    pub(crate) fn changes_after(self, applied: u64) -> Option<Vec<Change>> {
        if self.truncated || applied < self.floor {
            return None;
        }
        let mut expect = applied + 1;
        let mut out = Vec::new();
        for (seq, changes) in self.rows {
            if seq <= applied {
                continue;
            }
            if seq == expect {
                expect += 1;
            } else if seq + 1 != expect {
                return None;
            }
            out.extend(changes?);
        }
        if self.seq > applied && expect != self.seq + 1 {
            return None;
        }
        Some(out)
    }
}

/// A refresh token's last use as stored: the time of its last exchange and
/// that exchange's client, if known.
pub(crate) type LastUse = (u64, Option<ClientInfo>);

/// A feed read with, from the same snapshot, a token memory does not hold.
pub(crate) struct ReadThrough {
    pub log: LogBatch,
    /// The refresh record asked for (or the access record's parent), with
    /// its last exchange.
    pub refresh: Option<(RefreshRecord, Option<LastUse>)>,
    pub access: Option<AccessRecord>,
}

/// Everything a shared backend holds, read at once (PostgreSQL reads it in
/// one snapshot and hands it over record by record).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub members: Vec<MemberRecord>,
    pub org_cutoffs: Vec<(String, u64)>,
    pub org_policies: Vec<(String, OrgPolicyRecord)>,
    pub refresh: Vec<RefreshRecord>,
    pub access: Vec<AccessRecord>,
    /// Last exchanges: time and client (if known) by refresh id.
    pub last_refresh: Vec<([u8; 16], u64, Option<ClientInfo>)>,
    /// Records that could not be decoded and were left out (fail closed).
    pub skipped: u64,
}

impl Snapshot {
    /// Hands the snapshot over to `sink` as a load does (see
    /// [`LoadSink`]): access records oldest first.
    pub(crate) fn hand_over(self, sink: &dyn LoadSink) {
        for (org, at) in self.org_cutoffs {
            sink.org_cutoff(org, at);
        }
        for (org, policy) in self.org_policies {
            sink.org_policy(org, policy);
        }
        for m in self.members {
            sink.member(m);
        }
        for r in &self.refresh {
            sink.refresh(&r.view());
        }
        let mut access = self.access;
        access.sort_by_key(|a| (a.issued_at, a.id));
        for rec in access {
            sink.access(rec);
        }
        for (id, at, client) in self.last_refresh {
            sink.last_refresh(id, at, client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Role;

    fn batch(seq: u64, floor: u64, rows: &[u64]) -> LogBatch {
        let member = Change::AddMember {
            org: "acme".into(),
            user: "u".into(),
            role: Role::User,
        };
        LogBatch {
            seq,
            floor,
            rows: rows
                .iter()
                .map(|s| (*s, Some(vec![member.clone()])))
                .collect(),
            truncated: false,
        }
    }

    #[test]
    fn changes_after_needs_every_sequence_number() {
        // Two rows for 3, one for 4: contiguous from 2.
        let b = || batch(4, 0, &[3, 3, 4]);
        assert_eq!(b().changes_after(2).map(|c| c.len()), Some(3));
        // Nothing new.
        assert_eq!(b().changes_after(4).map(|c| c.len()), Some(0));
        // A hole (3 missing when 1 is applied).
        assert!(b().changes_after(1).is_none());
        // Rows pruned past what is applied.
        let pruned = || batch(4, 3, &[4]);
        assert!(pruned().changes_after(2).is_none());
        assert_eq!(pruned().changes_after(3).map(|c| c.len()), Some(1));
        // The epoch says 5 but the rows stop at 4.
        assert!(batch(5, 0, &[3, 4]).changes_after(2).is_none());
        // Truncated reads and undecodable rows mean a reload.
        let mut t = batch(4, 0, &[3, 4]);
        t.truncated = true;
        assert!(t.changes_after(2).is_none());
        let mut bad = batch(3, 0, &[3]);
        bad.rows[0].1 = None;
        assert!(bad.changes_after(2).is_none());
    }
}
