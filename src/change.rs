//! [`Change`]: a change to durable state at the level of intent. Each
//! backend applies a batch in its own transaction, and memory applies the
//! same batch (the in-memory state); each handles every variant explicitly.

use crate::codec::{AccessRecord, EventRecord, MemberRecord, RefreshRecord};

/// One change to durable state. A batch of changes is committed atomically.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Insert or replace a member.
    PutMember(MemberRecord),
    /// Remove a member record.
    DeleteMember { org: String, user: String },
    /// Set an organization's not-before cutoff.
    PutOrgCutoff { org: String, at: u64 },
    /// A new refresh token: its record, active (and, where the backend
    /// keeps one, its entry in an index by owner).
    IssueRefresh(RefreshRecord),
    /// A stored refresh record as it stands, for memory only: what loading,
    /// a replica's snapshot and a read-through hand over. Never committed
    /// (a backend refuses it).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    LoadRefresh(RefreshRecord),
    /// Revoke a refresh token, and with it its family, if it is active: the
    /// backend changes the stored record's state inside its own
    /// transaction (the store reads nothing from disk to revoke).
    RevokeRefresh {
        id: [u8; 16],
        at: u64,
        by: String,
        reason: Option<String>,
    },
    /// Revoke, each as [`Change::RevokeRefresh`] would, every active
    /// refresh token of `org` (of its member `user` only, when given) that
    /// was created before `before` (`u64::MAX`: all of them). The store
    /// reads nothing from disk to make it: memory revokes what it holds
    /// that matches, and each backend selects inside its own transaction.
    ///
    /// `held` is what memory held that matched when the store made the
    /// change. A backend without an index by owner (sled) revokes exactly
    /// these, which is all of them: an embedded store's memory holds every
    /// stored token. A backend that can select by owner (PostgreSQL, whose
    /// tables also hold tokens other replicas issued) selects itself and
    /// ignores `held`. Either way the backend reports how many it revoked
    /// (see [`Committed`]).
    RevokeMany {
        org: String,
        user: Option<String>,
        before: u64,
        at: u64,
        by: String,
        reason: Option<String>,
        held: Vec<[u8; 16]>,
    },
    /// Delete a refresh record (and any index entry); its access records must be
    /// deleted by `DeleteAccess` changes in the same batch.
    DeleteRefresh {
        id: [u8; 16],
        org: String,
        user: String,
    },
    /// Record the time of the last exchange of a refresh token, for when
    /// no access record of it is left to tell (exchange itself does not
    /// write it: the newest access record's `issued_at` says it).
    PutLastRefresh { id: [u8; 16], at: u64 },
    /// Put a new access record (an exchange, or a stored one being loaded)
    /// in slot `slot` of its family. A family (the
    /// access tokens of one refresh token) has at most `cap` slots; an
    /// access record put in a slot replaces the one there, which is how an
    /// exchange past the cap evicts the oldest in the same single write.
    PutAccess { rec: AccessRecord, slot: u32 },
    /// Revoke one access token: `rec` is its record with `revoked` set,
    /// put back in its slot `slot`.
    RevokeAccess { rec: AccessRecord, slot: u32 },
    /// Delete the access record `id` in slot `slot` of its family.
    DeleteAccess {
        refresh_id: [u8; 16],
        id: [u8; 16],
        slot: u32,
    },
    /// Replace the label of a stored refresh token (labels live on disk
    /// only: memory has nothing to change). A record the backend lacks is
    /// corruption, as for [`Change::RevokeRefresh`].
    SetLabel { id: [u8; 16], label: Option<String> },
    /// Append an audit event; its `seq` is also kept as the highest sequence
    /// number committed.
    Event(EventRecord),
}

/// What a backend reports of a committed batch that the store cannot know
/// beforehand.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// How many refresh tokens the batch's [`Change::RevokeMany`] changes
    /// revoked (tokens found revoked already are not counted).
    pub revoked: usize,
}
