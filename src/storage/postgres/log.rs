//! The change log as stored: what one transaction logged, and how a
//! replica reads it back.

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

/// One row of the change log as memory applies it; `None` when it cannot
/// be decoded (the reader then reloads a snapshot).
pub(super) fn decode_row(body: &[u8]) -> Option<Change> {
    decode::<LogChange>(body, "change log")
        .ok()
        .map(LogChange::into_change)
}
