//! The change log as stored: what one transaction logged, and what one
//! read of the log returned.

use super::*;

/// One logged change: what a replica applies to its memory. The variant
/// order is part of the stored format (`tokenvault_changes.body`): a new
/// variant goes last, so that rows written before it still decode. (A
/// replica of an older release cannot decode a newer variant; it then
/// reloads a snapshot, which is correct, only slower.)
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
    /// Refresh tokens a bulk revocation revoked, all at `at` by `by` for
    /// `reason`: the ids the database changed (at most [`IDS_PER_ROW`] per
    /// row; a bigger revocation is logged in several rows of the same
    /// transaction). Ids rather than the bulk terms, because a replica
    /// applies the log after its own writes: terms applied late could
    /// revoke a token issued after the revocation committed.
    RevokeMany {
        ids: Vec<[u8; 16]>,
        at: u64,
        by: String,
        reason: Option<String>,
    },
}

/// The most ids one [`LogChange::RevokeMany`] row carries: far below what
/// the codec decodes in one record.
pub(crate) const IDS_PER_ROW: usize = 1024;

impl LogChange {
    /// Appends to `out` the changes memory applies for this one.
    pub(crate) fn into_changes(self, out: &mut Vec<Change>) {
        let one = match self {
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
            LogChange::RevokeMany {
                ids,
                at,
                by,
                reason,
            } => {
                out.extend(ids.into_iter().map(|id| Change::RevokeRefresh {
                    id,
                    at,
                    by: by.clone(),
                    reason: reason.clone(),
                }));
                return;
            }
        };
        out.push(one);
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
            decode::<LogChange>(body, "change log")
                .ok()?
                .into_changes(&mut out);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A full row of a bulk revocation decodes (within the codec's limit)
    /// into one revocation per id, each as a single revocation is logged.
    #[test]
    fn a_full_bulk_revocation_row_decodes_into_single_revocations() {
        let ids: Vec<[u8; 16]> = (0..IDS_PER_ROW)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                id
            })
            .collect();
        let body = encode(&LogChange::RevokeMany {
            ids: ids.clone(),
            at: 7,
            by: "x".repeat(128),
            reason: Some("y".repeat(512)),
        })
        .unwrap();
        let batch = LogBatch {
            seq: 1,
            floor: 0,
            rows: vec![(1, body)],
            truncated: false,
        };
        let changes = batch.changes_after(0).expect("the row decodes");
        assert_eq!(changes.len(), IDS_PER_ROW);
        for (c, want) in changes.iter().zip(&ids) {
            match c {
                Change::RevokeRefresh { id, at, by, reason } => {
                    assert_eq!((id, *at, by.len()), (want, 7, 128));
                    assert_eq!(reason.as_deref().map(str::len), Some(512));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
