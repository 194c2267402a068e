//! The change log as stored: what one transaction logged, and how a
//! replica reads it back.

use super::*;

/// One logged change: what a replica applies to its memory, an intent as
/// the committing replica made it. The variant order is part of the stored
/// format (`tokenvault_changes.body`): a new variant goes last, so that rows
/// written before it still decode. (A replica of an older release cannot
/// decode a newer variant; it then reloads a snapshot, which is correct,
/// only slower.)
///
/// The first three variants marked "old format" are written by releases
/// before the log stored intents (whole records, from which the reader
/// worked out what had happened). They are never written now, and still
/// read, so that a log written before an upgrade is followed across it
/// (see [`LogChange::into_changes`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LogChange {
    /// Old format: a member record as it then stood.
    OldPutMember(MemberRecord),
    /// A member left the organization.
    RemoveMember {
        org: String,
        user: String,
    },
    /// An organization's cutoff (the latest wins).
    OrgCutoff {
        org: String,
        at: u64,
    },
    /// Old format: a refresh record just revoked.
    OldRevokeRefresh(RefreshRecord),
    DeleteRefresh {
        id: [u8; 16],
        org: String,
        user: String,
    },
    /// Old format: an access record just revoked.
    OldRevokeAccess(AccessRecord),
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
    AddMember {
        org: String,
        user: String,
        role: Role,
    },
    SetRole {
        org: String,
        user: String,
        role: Role,
    },
    MoveOwnership {
        org: String,
        to: String,
        from: Option<String>,
    },
    MemberCutoff {
        org: String,
        user: String,
        at: u64,
    },
    RevokeRefresh {
        id: [u8; 16],
        at: u64,
        by: String,
        reason: Option<String>,
    },
    RevokeAccess {
        refresh_id: [u8; 16],
        id: [u8; 16],
    },
    /// A refresh token's new label (`None`: removed). Memory keeps no
    /// labels, so a replica applies nothing; logged so that the log holds
    /// every intent committed.
    SetLabel {
        id: [u8; 16],
        label: Option<String>,
    },
    /// A refresh token suspended (`disable`) or restored (`enable`).
    SetDisabled {
        id: [u8; 16],
        disabled: bool,
    },
    /// A rotation: `old` dies at `dies_at`, `new` replaces it (its record
    /// as issued; memory keeps nothing of its lifecycle but what the
    /// change says).
    Rotate {
        old: [u8; 16],
        dies_at: u64,
        new: RefreshRecord,
    },
    /// An organization's token policy.
    SetOrgPolicy {
        org: String,
        policy: OrgPolicyRecord,
    },
    /// A pending token claimed: its record with its verifier (no longer
    /// pending).
    Claim(RefreshRecord),
    /// A new refresh token with lifecycle state (an assignment pending
    /// its claim): as [`LogChange::Issued`], with the state the record's
    /// serde form leaves out.
    IssuedWithLife {
        rec: RefreshRecord,
        life: crate::codec::Lifecycle,
    },
    /// A rotation on use: `old` spent, dying at `dies_at`; `new` its
    /// successor in the rotation family `family` (which the record's serde
    /// form leaves out; memory keeps nothing of it).
    RotateOnUse {
        old: [u8; 16],
        dies_at: u64,
        new: RefreshRecord,
        family: [u8; 16],
    },
}

/// The most ids one [`LogChange::RevokeMany`] row carries: far below what
/// the codec decodes in one record.
pub(crate) const IDS_PER_ROW: usize = 1024;

impl LogChange {
    /// Appends to `out` the changes memory applies for this one; `false`
    /// when it cannot be followed from the log (memory then reloads a
    /// snapshot).
    pub(crate) fn into_changes(self, out: &mut Vec<Change>) -> bool {
        let one = match self {
            LogChange::AddMember { org, user, role } => Change::AddMember { org, user, role },
            LogChange::SetRole { org, user, role } => Change::SetRole { org, user, role },
            LogChange::MoveOwnership { org, to, from } => Change::MoveOwnership { org, to, from },
            LogChange::MemberCutoff { org, user, at } => Change::MemberCutoff { org, user, at },
            LogChange::RemoveMember { org, user } => Change::RemoveMember { org, user },
            LogChange::OrgCutoff { org, at } => Change::OrgCutoff { org, at },
            LogChange::RevokeRefresh { id, at, by, reason } => {
                Change::RevokeRefresh { id, at, by, reason }
            }
            LogChange::DeleteRefresh { id, org, user } => Change::DeleteRefresh { id, org, user },
            LogChange::RevokeAccess { refresh_id, id } => Change::RevokeAccess { refresh_id, id },
            LogChange::DeleteAccess { refresh_id, id } => Change::DeleteAccess { refresh_id, id },
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
                return true;
            }
            // A new token is its issue, as memory applies it.
            LogChange::Issued(r) => Change::IssueRefresh(r),
            LogChange::SetLabel { id, label } => Change::SetLabel { id, label },
            LogChange::SetDisabled { id, disabled } => Change::SetDisabled { id, disabled },
            LogChange::Rotate { old, dies_at, new } => Change::Rotate { old, dies_at, new },
            LogChange::SetOrgPolicy { org, policy } => Change::SetOrgPolicy { org, policy },
            LogChange::Claim(rec) => Change::Claim(rec),
            LogChange::IssuedWithLife { mut rec, life } => {
                rec.life = life;
                Change::IssueRefresh(rec)
            }
            LogChange::RotateOnUse {
                old,
                dies_at,
                mut new,
                family,
            } => {
                new.life.family = Some(family);
                Change::RotateOnUse { old, dies_at, new }
            }
            // The old format, read for logs written before an upgrade. A
            // member record says the member is in the organization with
            // that role (added, changed, or made or unmade the Owner: memory
            // adds or updates them alike) and has at least that cutoff.
            LogChange::OldPutMember(m) => {
                out.push(Change::AddMember {
                    org: m.org.clone(),
                    user: m.user.clone(),
                    role: m.role,
                });
                if m.not_before > 0 {
                    out.push(Change::MemberCutoff {
                        org: m.org,
                        user: m.user,
                        at: m.not_before,
                    });
                }
                return true;
            }
            // Old format: only revoked records were logged; any other state
            // is not a change memory can follow.
            LogChange::OldRevokeRefresh(r) => match r.state {
                StoredState::Revoked { at, by, reason } => Change::RevokeRefresh {
                    id: r.id,
                    at,
                    by,
                    reason,
                },
                StoredState::Active => return false,
            },
            // Old format: a revoked access record.
            LogChange::OldRevokeAccess(a) if a.revoked => Change::RevokeAccess {
                refresh_id: a.refresh_id,
                id: a.id,
            },
            LogChange::OldRevokeAccess(_) => return false,
        };
        out.push(one);
        true
    }
}

/// One row of the change log as memory applies it; `None` when it cannot
/// be decoded (the reader then reloads a snapshot).
pub(super) fn decode_row(body: &[u8]) -> Option<Vec<Change>> {
    let mut out = Vec::new();
    decode::<LogChange>(body, "change log")
        .ok()?
        .into_changes(&mut out)
        .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RefreshRecord;

    /// The log's format before it stored intents, as that release wrote
    /// it (the same variants in the same order, with whole records).
    mod old {
        use super::*;
        #[derive(Serialize)]
        pub(super) enum LogChange {
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
            RevokeMany {
                ids: Vec<[u8; 16]>,
                at: u64,
                by: String,
                reason: Option<String>,
            },
        }
    }

    fn refresh(state: StoredState) -> RefreshRecord {
        RefreshRecord {
            id: [7; 16],
            org: "acme".into(),
            user: "bob".into(),
            role_at_issue: Role::User,
            scopes: vec!["read".into()],
            label: None,
            created_at: 10,
            created_by: "bob".into(),
            expires_at: None,
            state,
            verifier: [1; 32],
            life: Default::default(),
            issue: None,
        }
    }

    /// Rows an older release logged decode, after an upgrade, into the
    /// intents memory applies: a member record into adding (or updating)
    /// the member and their cutoff, a revoked record into its revocation;
    /// and one that cannot be followed (an active record) into nothing,
    /// which makes the replica reload a snapshot.
    #[test]
    fn rows_of_the_old_format_still_decode() {
        let row = |c: old::LogChange| decode_row(&encode(&c).unwrap());
        let got = row(old::LogChange::PutMember(MemberRecord {
            org: "acme".into(),
            user: "bob".into(),
            role: Role::Owner,
            not_before: 42,
        }))
        .expect("decodes");
        match got.as_slice() {
            [Change::AddMember { org, user, role }, Change::MemberCutoff { at, .. }] => {
                assert_eq!(
                    (org.as_str(), user.as_str(), *role, *at),
                    ("acme", "bob", Role::Owner, 42)
                );
            }
            other => panic!("{other:?}"),
        }
        let got = row(old::LogChange::PutMember(MemberRecord {
            org: "acme".into(),
            user: "bob".into(),
            role: Role::User,
            not_before: 0,
        }))
        .expect("decodes");
        assert!(
            matches!(
                got.as_slice(),
                [Change::AddMember {
                    role: Role::User,
                    ..
                }]
            ),
            "{got:?}"
        );

        let got = row(old::LogChange::RevokeRefresh(refresh(
            StoredState::Revoked {
                at: 99,
                by: "ann".into(),
                reason: Some("leaked".into()),
            },
        )))
        .expect("decodes");
        match got.as_slice() {
            [Change::RevokeRefresh { id, at, by, reason }] => {
                assert_eq!(
                    (*id, *at, by.as_str(), reason.as_deref()),
                    ([7; 16], 99, "ann", Some("leaked"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(row(old::LogChange::RevokeRefresh(refresh(StoredState::Active))).is_none());

        let access = AccessRecord {
            id: [8; 16],
            refresh_id: [7; 16],
            issued_at: 1,
            expires_at: 2,
            revoked: true,
            verifier: [2; 32],
            scopes: None,
        };
        let got = row(old::LogChange::RevokeAccess(access.clone())).expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::RevokeAccess { refresh_id, id, .. }] if *refresh_id == [7; 16] && *id == [8; 16]),
            "{got:?}"
        );
        let got = row(old::LogChange::DeleteMember {
            org: "acme".into(),
            user: "bob".into(),
        })
        .expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::RemoveMember { .. }]),
            "{got:?}"
        );
        let got = row(old::LogChange::PutOrgCutoff {
            org: "acme".into(),
            at: 5,
        })
        .expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::OrgCutoff { at: 5, .. }]),
            "{got:?}"
        );
        let got = row(old::LogChange::DeleteAccess {
            refresh_id: [7; 16],
            id: [8; 16],
        })
        .expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::DeleteAccess { id, .. }] if *id == [8; 16]),
            "{got:?}"
        );
        let got = row(old::LogChange::DeleteRefresh {
            id: [7; 16],
            org: "acme".into(),
            user: "bob".into(),
        })
        .expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::DeleteRefresh { .. }]),
            "{got:?}"
        );
        let got = row(old::LogChange::RevokeMany {
            ids: vec![[7; 16]],
            at: 3,
            by: "ann".into(),
            reason: None,
        })
        .expect("decodes");
        assert!(
            matches!(got.as_slice(), [Change::RevokeRefresh { at: 3, .. }]),
            "{got:?}"
        );
    }

    /// Every intent this release logs decodes back to the same intent.
    #[test]
    fn intents_round_trip() {
        let intents = vec![
            LogChange::AddMember {
                org: "o".into(),
                user: "u".into(),
                role: Role::Admin,
            },
            LogChange::SetRole {
                org: "o".into(),
                user: "u".into(),
                role: Role::User,
            },
            LogChange::MoveOwnership {
                org: "o".into(),
                to: "u".into(),
                from: Some("v".into()),
            },
            LogChange::MemberCutoff {
                org: "o".into(),
                user: "u".into(),
                at: 9,
            },
            LogChange::RevokeRefresh {
                id: [1; 16],
                at: 4,
                by: "b".into(),
                reason: None,
            },
            LogChange::RevokeAccess {
                refresh_id: [1; 16],
                id: [2; 16],
            },
            LogChange::SetLabel {
                id: [3; 16],
                label: Some("ci".into()),
            },
        ];
        let mut got = Vec::new();
        for c in intents {
            got.extend(decode_row(&encode(&c).unwrap()).expect("decodes"));
        }
        assert!(
            matches!(
                &got[0],
                Change::AddMember {
                    role: Role::Admin,
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(
            matches!(
                &got[1],
                Change::SetRole {
                    role: Role::User,
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(
            matches!(&got[2], Change::MoveOwnership { to, from: Some(f), .. } if to == "u" && f == "v"),
            "{got:?}"
        );
        assert!(
            matches!(&got[3], Change::MemberCutoff { at: 9, .. }),
            "{got:?}"
        );
        assert!(
            matches!(&got[4], Change::RevokeRefresh { at: 4, .. }),
            "{got:?}"
        );
        assert!(
            matches!(&got[5], Change::RevokeAccess { id, .. } if *id == [2; 16]),
            "{got:?}"
        );
        assert!(
            matches!(&got[6], Change::SetLabel { id, label: Some(l) } if *id == [3; 16] && l == "ci"),
            "{got:?}"
        );
        assert_eq!(got.len(), 7);
    }

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
