//! The change log as stored: what one transaction logged, and how a
//! replica reads it back.

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
    /// A new refresh token (`generate`, `assign`), active: logged so that
    /// every replica holds it before it is first presented (see
    /// `docs/postgres.md`, "New tokens in the change log").
    Issued(RefreshRecord),
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
            LogChange::Issued(r) => Change::LoadRefresh(r),
        };
        out.push(one);
    }
}

/// One row of the change log as memory applies it; `None` when it cannot
/// be decoded (the reader then reloads a snapshot).
pub(super) fn decode_row(body: &[u8]) -> Option<Vec<Change>> {
    let mut out = Vec::new();
    decode::<LogChange>(body, "change log")
        .ok()?
        .into_changes(&mut out);
    Some(out)
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
        let changes = decode_row(&body).expect("the row decodes");
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
