//! The change log as stored: what one transaction logged, and what one
//! read of the log returned.

use super::*;

/// One logged change: what a replica applies to its memory. The variant
/// order is part of the stored format (`tokenvault_changes.body`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LogChange {
    PutMember(MemberRecord),
    DeleteMember {
        org: String,
        user: String,
    },
    PutOrgCutoff {
        org: String,
        at: u64,
    },
    RevokeRefresh(RefreshRecord),
    DeleteRefresh {
        id: [u8; 16],
        org: String,
        user: String,
    },
    RevokeAccess(AccessRecord),
    DeleteAccess {
        refresh_id: [u8; 16],
        id: [u8; 16],
    },
}

impl LogChange {
    pub(crate) fn into_change(self) -> Change {
        match self {
            LogChange::PutMember(m) => Change::PutMember(m),
            LogChange::DeleteMember { org, user } => Change::DeleteMember { org, user },
            LogChange::PutOrgCutoff { org, at } => Change::PutOrgCutoff { org, at },
            LogChange::RevokeRefresh(r) => match r.state {
                StoredState::Revoked { at, by, reason } => Change::RevokeRefresh {
                    id: r.id,
                    at,
                    by,
                    reason,
                },
                // Logged only when revoked; an active one is news to memory.
                StoredState::Active => Change::LoadRefresh(r),
            },
            LogChange::DeleteRefresh { id, org, user } => Change::DeleteRefresh { id, org, user },
            LogChange::RevokeAccess(a) => Change::RevokeAccess {
                rec: a,
                slot: SLOT_ANY,
            },
            LogChange::DeleteAccess { refresh_id, id } => Change::DeleteAccess {
                refresh_id,
                id,
                slot: SLOT_ANY,
            },
        }
    }
}

/// What one read of the change log returned, all from one snapshot.
#[derive(Debug, Default)]
pub(crate) struct LogBatch {
    /// The epoch: every transaction up to this number is reflected.
    pub seq: u64,
    /// Rows up to this number may have been pruned.
    pub floor: u64,
    /// `(seq, body)` of each row after the asked-for number, in order.
    pub rows: Vec<(u64, Vec<u8>)>,
    /// Whether the read stopped at [`MAX_LOG_ROWS`].
    pub truncated: bool,
}

impl LogBatch {
    /// The changes after `applied`, or `None` when they cannot be had from
    /// the log (pruned, too many, a hole, or an undecodable row): the caller
    /// then reloads a snapshot.
    ///
    /// This replica's own transactions come back too and are applied a
    /// second time, which changes nothing: each management call catches up
    /// before it commits, so what lies between its first and second
    /// application is only other replicas' deletions and access-token
    /// revocations, which commute with it.
    pub(crate) fn changes_after(&self, applied: u64) -> Option<Vec<Change>> {
        if self.truncated || applied < self.floor {
            return None;
        }
        let mut expect = applied + 1;
        let mut out = Vec::new();
        for (seq, body) in &self.rows {
            if *seq <= applied {
                continue;
            }
            if *seq == expect {
                expect += 1;
            } else if *seq + 1 != expect {
                return None;
            }
            out.push(decode::<LogChange>(body, "change log").ok()?.into_change());
        }
        if self.seq > applied && expect != self.seq + 1 {
            return None;
        }
        Some(out)
    }
}

/// A refresh record read through, with its last exchange.
pub(crate) struct ReadThrough {
    pub log: LogBatch,
    pub refresh: Option<(RefreshRecord, Option<u64>)>,
    pub access: Option<AccessRecord>,
}
