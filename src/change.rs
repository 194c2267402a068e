//! [`Change`]: a change to durable state at the level of intent. Each
//! backend applies a batch in its own transaction, and memory applies the
//! same batch (the in-memory state); each handles every variant explicitly,
//! from what the variant says, without working out from a record what was
//! meant.

use crate::codec::{AccessRecord, EventRecord, OrgPolicyRecord, RefreshRecord};
use crate::policy::Role;
use crate::types::ClientInfo;

/// One change to durable state. A batch of changes is committed atomically.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new member of `org` with `role`, with no cutoff of their own. With
    /// [`Role::Owner`], they become the organization's Owner.
    AddMember {
        org: String,
        user: String,
        role: Role,
    },
    /// A member's new role, neither to nor from [`Role::Owner`] (see
    /// [`Change::MoveOwnership`]).
    SetRole {
        org: String,
        user: String,
        role: Role,
    },
    /// The member `to` becomes the Owner of `org`; `from`, the Owner until
    /// now (if the organization had one), becomes an Admin.
    MoveOwnership {
        org: String,
        to: String,
        from: Option<String>,
    },
    /// A member leaves `org`. Their tokens are revoked by a
    /// [`Change::RevokeMany`] in the same batch, and stay listed (revoked)
    /// until purged.
    RemoveMember { org: String, user: String },
    /// A member's not-before cutoff: their tokens created before `at` are
    /// revoked. Where several are set, the latest wins.
    MemberCutoff { org: String, user: String, at: u64 },
    /// An organization's not-before cutoff (the latest wins).
    OrgCutoff { org: String, at: u64 },
    /// A new refresh token, active.
    IssueRefresh(RefreshRecord),
    /// Revoke a refresh token, and with it its family, if a revocation still
    /// changes it: the backend changes the stored record inside its own
    /// transaction (the store reads nothing from disk to revoke).
    RevokeRefresh {
        id: [u8; 16],
        at: u64,
        by: String,
        reason: Option<String>,
    },
    /// Revoke, each as [`Change::RevokeRefresh`] would, every refresh token
    /// of `org` (of its member `user` only, when given) created before
    /// `before` (`u64::MAX`: all of them) that a revocation still changes.
    /// The backend selects them inside its own transaction, by the codec's
    /// predicate, and reports their ids (see [`Committed`]); memory revokes
    /// exactly those.
    RevokeMany {
        org: String,
        user: Option<String>,
        before: u64,
        at: u64,
        by: String,
        reason: Option<String>,
    },
    /// Delete a refresh record; its access records must be deleted by
    /// `DeleteAccess` changes in the same batch.
    DeleteRefresh {
        id: [u8; 16],
        org: String,
        user: String,
    },
    /// Record the last use of a refresh token: the time, for when no
    /// access record of it is left to tell (the newest access record's
    /// `issued_at` says it otherwise), and the client of the last exchange
    /// (`None`: unknown), which replaces the one stored. An exchange puts
    /// it in its own batch only when the client differs from the one
    /// memory holds (no write of its own, no sync of its own).
    PutLastRefresh {
        id: [u8; 16],
        at: u64,
        client: Option<ClientInfo>,
    },
    /// A new access token of its refresh token's family. Past the cap on
    /// live access tokens, the store puts the eviction of the oldest
    /// ([`Change::DeleteAccess`]) just before it in the same batch.
    PutAccess(AccessRecord),
    /// Revoke one access token (of the family `refresh_id`), if it is not
    /// revoked already and is still stored.
    RevokeAccess { refresh_id: [u8; 16], id: [u8; 16] },
    /// Delete the access record `id` (of the family `refresh_id`): a purge,
    /// or the eviction of the oldest past the cap.
    DeleteAccess { refresh_id: [u8; 16], id: [u8; 16] },
    /// Replace the label of a stored refresh token (labels live on disk
    /// only: memory has nothing to change). A record the backend lacks is
    /// corruption, as for [`Change::RevokeRefresh`].
    SetLabel { id: [u8; 16], label: Option<String> },
    /// Suspend (`disabled: true`, `disable`) or restore (`enable`) a
    /// stored refresh token: the backend sets its lifecycle flag inside its
    /// transaction; memory sets the entry's. A record the backend lacks is
    /// corruption, as for [`Change::RevokeRefresh`].
    SetDisabled { id: [u8; 16], disabled: bool },
    /// A pending token claimed by its member: its record as it now stands
    /// (its verifier set, no longer pending) replaces the stored one;
    /// memory makes its entry anew from it. A record the backend lacks is
    /// corruption.
    Claim(RefreshRecord),
    /// Rotate the refresh token `old`: `new` (its successor, a new active
    /// record) is stored, and `old` is marked rotated and dies at `dies_at`
    /// (its expiry is lowered to it, never raised). Its access tokens die with it: they
    /// follow their refresh token's state.
    Rotate {
        old: [u8; 16],
        dies_at: u64,
        new: RefreshRecord,
    },
    /// A refresh of an OAuth client under its organization's
    /// `rotate_on_use`: `old` is spent (marked rotated and spent) and dies
    /// at `dies_at` (its expiry lowered to it, never raised: a second spend
    /// within the leeway keeps the first one's end); `new`, its successor
    /// in the same rotation family (`new.life.family`), is stored active.
    /// A record the backend lacks is corruption.
    RotateOnUse {
        old: [u8; 16],
        dies_at: u64,
        new: RefreshRecord,
    },
    /// Revoke, each as [`Change::RevokeRefresh`] would, every refresh token
    /// of the member `org`/`user` whose rotation family is `family` (the
    /// original's id: the original itself and every successor made by a
    /// rotation on use) that a revocation still changes: reuse of a spent
    /// token. The backend selects them inside its own transaction and
    /// reports their ids (see [`Committed`]), as for
    /// [`Change::RevokeMany`]; memory revokes exactly those.
    RevokeFamily {
        org: String,
        user: String,
        family: [u8; 16],
        at: u64,
        by: String,
        reason: Option<String>,
    },
    /// An organization's token policy, replacing the one it had (the
    /// default: no limits).
    SetOrgPolicy {
        org: String,
        policy: OrgPolicyRecord,
    },
    /// Append an audit event; its `seq` is also kept as the highest sequence
    /// number committed.
    Event(EventRecord),
}

/// What a backend reports of a committed batch that the store cannot know
/// beforehand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The refresh tokens the batch's [`Change::RevokeMany`] and
    /// [`Change::RevokeFamily`] changes revoked (tokens found revoked already are not named), sorted.
    pub revoked: Vec<[u8; 16]>,
}
