//! Writing a batch of changes: one insert, a batch on one tree, or a
//! transaction over the trees.

use std::collections::HashMap;

use super::*;
use crate::codec::{issue_target, IssueEvent};
use crate::policy::Role;

type TxResult = std::result::Result<(), ConflictableTransactionError<Error>>;
type TxOutcome = std::result::Result<Committed, ConflictableTransactionError<Error>>;

pub(super) fn enc<T: serde::Serialize>(
    v: &T,
) -> std::result::Result<Vec<u8>, ConflictableTransactionError<Error>> {
    encode(v).map_err(ConflictableTransactionError::Abort)
}

impl SledBackend {
    /// Writes the warm-start files of this database (at `path`): its
    /// refresh and access records in the order and parts of
    /// [`scan_families`], then its last exchanges.
    pub(super) fn write_warm(&self, path: &Path) -> Result<warm::Marker> {
        let parts = scan_parts();
        warm::write(
            path,
            parts,
            |writers| {
                scan_families(
                    parts,
                    &self.refresh,
                    &self.access,
                    &|i, k, v| writers[i].lock().entry(warm::REFRESH, k, v),
                    &|i, k, v| writers[i].lock().entry(warm::ACCESS, k, v),
                )
            },
            |last| {
                for kv in self.last_refresh.iter() {
                    let (k, v) = kv.map_err(io)?;
                    last.entry(warm::LAST_REFRESH, &k, &v);
                }
                Ok(())
            },
        )
    }

    /// Brings access records of schema version 1 (keyed by refresh id and
    /// access id) to slot keys (refresh id and slot). Idempotent; atomic.
    pub(super) fn upgrade_access_keys(&self) -> Result<()> {
        // Group the version-1 records by family, oldest first, and give them
        // slots 0, 1, ... in one batch on the access tree (atomic). Keys
        // that are not well-formed version-1 records are left alone (the
        // loader skips them, the integrity check reports them).
        let mut old: Vec<(sled::IVec, AccessRecord)> = Vec::new();
        for kv in self.access.iter() {
            let (k, v) = kv.map_err(io)?;
            if k.len() != V1_ACCESS_KEY_LEN {
                continue;
            }
            if let Ok(a) = decode_access(&v) {
                if k[..16] == a.refresh_id && k[16..] == a.id {
                    old.push((k, a));
                }
            }
        }
        if old.is_empty() {
            return Ok(());
        }
        old.sort_by_key(|(_, a)| (a.refresh_id, a.issued_at, a.id));
        let mut batch = sled::Batch::default();
        let mut family = None;
        let mut slot = 0u32;
        for (k, a) in &old {
            if family != Some(a.refresh_id) {
                family = Some(a.refresh_id);
                slot = 0;
            }
            batch.remove(k.clone());
            batch.insert(&access_key(&a.refresh_id, slot)[..], encode_access(a)?);
            slot += 1;
        }
        self.access.apply_batch(batch).map_err(io)?;
        self.flush()?;
        Ok(())
    }

    /// The highest audit sequence number stored in the meta tree.
    pub(super) fn event_seq(&self) -> Result<u64> {
        match self.meta.get(EVENT_SEQ).map_err(io)? {
            Some(v) => u64_from(&v).ok_or_else(|| Error::Corrupt("bad event_seq".into())),
            None => Ok(0),
        }
    }

    /// Writes a batch atomically: one insert where one key changes, a
    /// batch on one tree where only access records change, a transaction
    /// over the trees otherwise.
    pub(super) fn write(&self, changes: &[Change]) -> Result<Committed> {
        // Issuing a token (its record, and the audit event the record
        // carries) is one insert. So is an exchange, also one that evicts
        // the oldest access record of its family: the new record takes the
        // evicted one's slot, its key.
        match changes {
            [Change::IssueRefresh(r)] => {
                self.refresh
                    .insert(&r.id[..], encode_refresh(r)?)
                    .map_err(io)?;
                self.owners
                    .issued(&r.org, &r.user, r.id, r.issue.map_or(0, |i| i.seq));
                return Ok(Committed::default());
            }
            [Change::IssueRefresh(r), Change::Event(e)] if carried(r, e).is_some() => {
                let mut rec = r.clone();
                rec.issue = carried(r, e);
                self.refresh
                    .insert(&r.id[..], encode_refresh(&rec)?)
                    .map_err(io)?;
                self.owners.issued(&r.org, &r.user, r.id, e.seq);
                return Ok(Committed::default());
            }
            [Change::PutAccess(rec)] => {
                let v = encode_access(rec)?;
                return self.slots.with(&self.access, &rec.refresh_id, |fam| {
                    let slot = fam.free_slot();
                    self.access
                        .insert(access_key(&rec.refresh_id, slot), v)
                        .map_err(io)?;
                    fam.put(rec.id, slot);
                    Ok(Committed::default())
                });
            }
            [Change::DeleteAccess {
                refresh_id,
                id: old,
            }, Change::PutAccess(rec)]
                if *refresh_id == rec.refresh_id =>
            {
                let v = encode_access(rec)?;
                return self.slots.with(&self.access, refresh_id, |fam| {
                    let slot = fam.slot_of(old).unwrap_or_else(|| fam.free_slot());
                    self.access
                        .insert(access_key(refresh_id, slot), v)
                        .map_err(io)?;
                    fam.replace(old, rec.id);
                    Ok(Committed::default())
                });
            }
            _ => {}
        }
        // The slots of the access records the batch touches, planned on
        // copies of their families' slots while their stripes stay locked,
        // and kept only if the write succeeds.
        let touched: Vec<[u8; 16]> = changes.iter().filter_map(family_of).collect();
        let mut locked = self.slots.lock(touched.iter().copied());
        let (at, planned) = plan_slots(changes, &self.access, &mut locked)?;
        // What the batch's issues carry, and the tokens its bulk
        // revocations select among: every stored record whose id begins as
        // one of the owner's does (the table names a prefix of each of
        // theirs; the revocation's terms leave out any other's).
        let carries = carried_events(changes);
        let candidates: Vec<Vec<[u8; 16]>> = changes
            .iter()
            .map(|c| match c {
                Change::RevokeMany { org, user, .. } => self.ids_by_prefix(org, user.as_deref()),
                Change::RevokeFamily { org, user, .. } => self.ids_by_prefix(org, Some(user)),
                _ => Ok(Vec::new()),
            })
            .collect::<Result<_>>()?;
        let access_only = changes
            .iter()
            .all(|c| matches!(c, Change::PutAccess(_) | Change::DeleteAccess { .. }));
        if access_only {
            let mut batch = sled::Batch::default();
            for (c, slot) in changes.iter().zip(&at) {
                match (c, slot) {
                    (Change::PutAccess(rec), Some(slot)) => {
                        batch.insert(&access_key(&rec.refresh_id, *slot)[..], encode_access(rec)?)
                    }
                    (Change::DeleteAccess { refresh_id, .. }, Some(slot)) => {
                        batch.remove(&access_key(refresh_id, *slot)[..])
                    }
                    // Not stored: nothing to delete.
                    _ => {}
                }
            }
            self.access.apply_batch(batch).map_err(io)?;
            locked.put_back(planned);
            return Ok(Committed::default());
        }
        // Which of the batch's changes deleted a stored refresh record,
        // noted by the attempt that commits.
        let deleted = std::cell::RefCell::new(vec![false; changes.len()]);
        let res: std::result::Result<Committed, TransactionError<Error>> = (
            &self.members,
            &self.cutoffs,
            &self.refresh,
            &self.access,
            &self.last_refresh,
            &self.events,
            &self.meta,
            &self.org_policy,
        )
            .transaction(
                |(members, cutoffs, refresh, access, last, events, meta, policies)| -> TxOutcome {
                    // Keeps EVENT_SEQ the highest sequence number stored.
                    let raise_seq = |seq: u64| -> TxResult {
                        let cur = meta.get(EVENT_SEQ)?.and_then(|v| u64_from(&v)).unwrap_or(0);
                        if seq > cur {
                            meta.insert(EVENT_SEQ, &seq.to_be_bytes()[..])?;
                        }
                        Ok(())
                    };
                    // Counted afresh on each attempt (sled may run this
                    // closure again after a conflict).
                    let mut done = Committed::default();
                    deleted.borrow_mut().fill(false);
                    for (i, (c, slot)) in changes.iter().zip(&at).enumerate() {
                        match c {
                            Change::AddMember { org, user, role } => {
                                let m = MemberRecord {
                                    org: org.clone(),
                                    user: user.clone(),
                                    role: *role,
                                    not_before: 0,
                                };
                                members.insert(member_key(org, user), enc(&m)?)?;
                            }
                            Change::SetRole { org, user, role } => {
                                update_member(members, org, user, |m| m.role = *role)?;
                            }
                            Change::MoveOwnership { org, to, from } => {
                                if let Some(from) = from {
                                    update_member(members, org, from, |m| m.role = Role::Admin)?;
                                }
                                update_member(members, org, to, |m| m.role = Role::Owner)?;
                            }
                            Change::RemoveMember { org, user } => {
                                members.remove(member_key(org, user))?;
                            }
                            Change::MemberCutoff { org, user, at } => {
                                update_member(members, org, user, |m| {
                                    m.not_before = m.not_before.max(*at)
                                })?;
                            }
                            Change::OrgCutoff { org, at } => {
                                // The latest cutoff wins.
                                let key = org_key(org);
                                let cur = cutoffs.get(&key)?.and_then(|v| u64_from(&v));
                                if cur.is_none_or(|c| c < *at) {
                                    cutoffs.insert(key, &at.to_be_bytes()[..])?;
                                }
                            }
                            Change::IssueRefresh(r) => {
                                let v = match carries.issue.get(&i) {
                                    // Its issue event inside the record.
                                    Some(ie) => {
                                        let mut rec = r.clone();
                                        rec.issue = Some(*ie);
                                        encode_refresh(&rec)
                                    }
                                    None => encode_refresh(r),
                                }
                                .map_err(ConflictableTransactionError::Abort)?;
                                refresh.insert(&r.id[..], v)?;
                            }
                            Change::RevokeRefresh { id, at, by, reason } => {
                                let revoke = Revocation {
                                    at: *at,
                                    by,
                                    reason,
                                };
                                revoke_refresh(refresh, id, &revoke, None)?;
                            }
                            Change::RevokeMany {
                                org,
                                user,
                                before,
                                at,
                                by,
                                reason,
                            } => {
                                // The owner's tokens among the records of
                                // the prefixes the backend's own table
                                // names (read before the transaction);
                                // each is selected here by the codec's
                                // predicate, and a record under another
                                // id's key is left alone. One gone since
                                // is skipped: a damaged entry must not
                                // block an emergency revocation.
                                let revoke = Revocation {
                                    at: *at,
                                    by,
                                    reason,
                                };
                                let terms = Terms {
                                    org,
                                    user: user.as_deref(),
                                    before: *before,
                                    family: None,
                                };
                                for id in &candidates[i] {
                                    if revoke_refresh(refresh, id, &revoke, Some(&terms))? {
                                        done.revoked.push(*id);
                                    }
                                }
                            }
                            Change::RevokeFamily {
                                org,
                                user,
                                family,
                                at,
                                by,
                                reason,
                            } => {
                                // The member's tokens, selected here by
                                // their stored family, as for RevokeMany.
                                let revoke = Revocation {
                                    at: *at,
                                    by,
                                    reason,
                                };
                                let terms = Terms {
                                    org,
                                    user: Some(user),
                                    before: u64::MAX,
                                    family: Some(*family),
                                };
                                for id in &candidates[i] {
                                    if revoke_refresh(refresh, id, &revoke, Some(&terms))? {
                                        done.revoked.push(*id);
                                    }
                                }
                            }
                            Change::DeleteRefresh { id, .. } => {
                                // The issue event the record carries moves
                                // to the events tree: the audit trail
                                // outlives the token.
                                if let Some(v) = refresh.remove(&id[..])? {
                                    deleted.borrow_mut()[i] = true;
                                    if let Some(ev) =
                                        decode_refresh(&v).ok().and_then(|r| r.issue_event())
                                    {
                                        let v = encode_event(&ev)
                                            .map_err(ConflictableTransactionError::Abort)?;
                                        events.insert(event_key(&ev.org, ev.seq), v)?;
                                        raise_seq(ev.seq)?;
                                    }
                                }
                                last.remove(&id[..])?;
                            }
                            Change::SetLabel { id, label } => {
                                set_label(refresh, id, label)?;
                            }
                            Change::SetOrgPolicy { org, policy } => {
                                policies.insert(org_key(org), enc(policy)?)?;
                            }
                            Change::Claim(rec) => {
                                update_refresh(refresh, &rec.id, |r| {
                                    r.verifier = rec.verifier;
                                    r.life = rec.life.clone();
                                })?;
                            }
                            Change::SetDisabled { id, disabled } => {
                                update_refresh(refresh, id, |r| r.life.disabled = *disabled)?;
                            }
                            Change::Rotate { old, dies_at, new } => {
                                update_refresh(refresh, old, |r| r.rotate_to(*dies_at))?;
                                let v = encode_refresh(new)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                refresh.insert(&new.id[..], v)?;
                            }
                            Change::RotateOnUse { old, dies_at, new } => {
                                update_refresh(refresh, old, |r| r.spend_to(*dies_at))?;
                                let v = encode_refresh(new)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                refresh.insert(&new.id[..], v)?;
                            }
                            Change::PutLastRefresh { id, at, client } => {
                                last.insert(
                                    &id[..],
                                    crate::codec::encode_last_use(*at, client.as_ref()),
                                )?;
                            }
                            Change::PutAccess(rec) => {
                                if let Some(slot) = slot {
                                    access.insert(
                                        &access_key(&rec.refresh_id, *slot)[..],
                                        encode_access(rec)
                                            .map_err(ConflictableTransactionError::Abort)?,
                                    )?;
                                }
                            }
                            Change::RevokeAccess { refresh_id, id } => {
                                // Its record, if still stored, marked.
                                let Some(slot) = slot else { continue };
                                let key = access_key(refresh_id, *slot);
                                if let Some(v) = access.get(&key[..])? {
                                    let mut a = decode_access(&v)
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    if a.id == *id && !a.revoked {
                                        a.revoked = true;
                                        access.insert(
                                            &key[..],
                                            encode_access(&a)
                                                .map_err(ConflictableTransactionError::Abort)?,
                                        )?;
                                    }
                                }
                            }
                            Change::DeleteAccess { refresh_id, .. } => {
                                if let Some(slot) = slot {
                                    access.remove(&access_key(refresh_id, *slot)[..])?;
                                }
                            }
                            Change::Event(_) if carries.events.contains(&i) => {}
                            Change::Event(e) => {
                                let v =
                                    encode_event(e).map_err(ConflictableTransactionError::Abort)?;
                                events.insert(event_key(&e.org, e.seq), v)?;
                                raise_seq(e.seq)?;
                            }
                        }
                    }
                    Ok(done)
                },
            );
        match res {
            Ok(done) => {
                locked.put_back(planned);
                let deleted = deleted.into_inner();
                for (i, c) in changes.iter().enumerate() {
                    match c {
                        Change::IssueRefresh(r) => {
                            let seq = carries
                                .issue
                                .get(&i)
                                .copied()
                                .or(r.issue)
                                .map_or(0, |ie| ie.seq);
                            self.owners.issued(&r.org, &r.user, r.id, seq);
                        }
                        // Only a record that was there: the table
                        // names records by a prefix of their ids, which
                        // another record may share.
                        Change::DeleteRefresh { id, org, user } if deleted[i] => {
                            self.owners.deleted(org, user, id)
                        }
                        // A rotation's successor is issued; its event is
                        // `token.rotate`, in the events tree.
                        Change::Rotate { new, .. } | Change::RotateOnUse { new, .. } => {
                            self.owners.issued(&new.org, &new.user, new.id, 0)
                        }
                        _ => {}
                    }
                }
                Ok(done)
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(io(e)),
        }
    }
}

/// The family whose slots a change touches, if any.
fn family_of(c: &Change) -> Option<[u8; 16]> {
    match c {
        Change::PutAccess(rec) => Some(rec.refresh_id),
        Change::RevokeAccess { refresh_id, .. } | Change::DeleteAccess { refresh_id, .. } => {
            Some(*refresh_id)
        }
        Change::DeleteRefresh { id, .. } => Some(*id),
        _ => None,
    }
}

/// The slot each access change of `changes` writes (`None`: a record that
/// is not stored, or a change that is not an access change), and the
/// families' slots once the batch is written.
type Planned = Vec<([u8; 16], slots::Family)>;

fn plan_slots(
    changes: &[Change],
    access: &sled::Tree,
    locked: &mut slots::Locked<'_>,
) -> Result<(Vec<Option<u32>>, Planned)> {
    let mut planned: Planned = Vec::new();
    let mut index: HashMap<[u8; 16], usize> = HashMap::new();
    let mut at = Vec::with_capacity(changes.len());
    for c in changes {
        let Some(family) = family_of(c) else {
            at.push(None);
            continue;
        };
        let i = match index.get(&family) {
            Some(i) => *i,
            None => {
                planned.push((family, locked.copy(access, &family)?));
                index.insert(family, planned.len() - 1);
                planned.len() - 1
            }
        };
        let fam = &mut planned[i].1;
        at.push(match c {
            Change::PutAccess(rec) => {
                let slot = fam.free_slot();
                fam.put(rec.id, slot);
                Some(slot)
            }
            Change::DeleteAccess { id, .. } => fam.remove(id),
            Change::RevokeAccess { id, .. } => fam.slot_of(id),
            _ => {
                // The family itself goes (its records were deleted before,
                // in the same batch).
                *fam = slots::Family::default();
                None
            }
        });
    }
    Ok((at, planned))
}

/// A revocation's when, who and why.
struct Revocation<'a> {
    at: u64,
    by: &'a str,
    reason: &'a Option<String>,
}

/// A bulk revocation's terms: the tokens of `org` (of its member `user`,
/// when given) created before `before`.
struct Terms<'a> {
    org: &'a str,
    user: Option<&'a str>,
    before: u64,
    /// Only the tokens of this rotation family (see
    /// [`crate::codec::RefreshRecord::family_root`]).
    family: Option<[u8; 16]>,
}

/// Revokes the stored refresh record `id` if a revocation still changes it
/// (and, for a bulk one, it meets `terms`); returns whether it did. A
/// record memory knows of and the disk lacks is corruption, unless it was
/// named for a bulk revocation (then nothing is revoked).
fn revoke_refresh(
    refresh: &sled::transaction::TransactionalTree,
    id: &[u8; 16],
    revoke: &Revocation<'_>,
    terms: Option<&Terms<'_>>,
) -> std::result::Result<bool, ConflictableTransactionError<Error>> {
    let abort = ConflictableTransactionError::Abort;
    let Some(v) = refresh.get(&id[..])? else {
        if terms.is_some() {
            return Ok(false);
        }
        return Err(abort(Error::Corrupt(format!(
            "token {} is in memory but not on disk",
            crate::token::TokenId(*id)
        ))));
    };
    let mut r = decode_refresh(&v).map_err(abort)?;
    let selected = match terms {
        None => r.state.revocable(),
        Some(t) => {
            r.id == *id
                && r.org == t.org
                && t.user.is_none_or(|u| r.user == u)
                && t.family.is_none_or(|f| r.family_root() == f)
                && r.revocable_before(t.before)
        }
    };
    if !selected {
        return Ok(false);
    }
    r.state = StoredState::Revoked {
        at: revoke.at,
        by: revoke.by.into(),
        reason: revoke.reason.clone(),
    };
    let v = encode_refresh(&r).map_err(abort)?;
    refresh.insert(&id[..], v)?;
    Ok(true)
}

/// Replaces the label of the stored refresh record `id`. A record memory
/// knows of and the disk lacks is corruption.
fn set_label(
    refresh: &sled::transaction::TransactionalTree,
    id: &[u8; 16],
    label: &Option<String>,
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    update_refresh(refresh, id, |r| r.label = label.clone())
}

/// Reads, changes with `f` and writes back the stored refresh record `id`;
/// one memory knows of and the disk lacks is corruption.
fn update_refresh(
    refresh: &sled::transaction::TransactionalTree,
    id: &[u8; 16],
    f: impl FnOnce(&mut RefreshRecord),
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    let abort = ConflictableTransactionError::Abort;
    let Some(v) = refresh.get(&id[..])? else {
        return Err(abort(Error::Corrupt(format!(
            "token {} is in memory but not on disk",
            crate::token::TokenId(*id)
        ))));
    };
    let mut r = decode_refresh(&v).map_err(abort)?;
    f(&mut r);
    let v = encode_refresh(&r).map_err(abort)?;
    refresh.insert(&id[..], v)?;
    Ok(())
}

/// Reads, changes with `f` and writes back the stored member `(org, user)`;
/// one memory holds and the disk lacks is corruption.
fn update_member(
    members: &sled::transaction::TransactionalTree,
    org: &str,
    user: &str,
    f: impl FnOnce(&mut MemberRecord),
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    let abort = ConflictableTransactionError::Abort;
    let key = member_key(org, user);
    let Some(v) = members.get(&key)? else {
        return Err(abort(Error::Corrupt(format!(
            "member {user} of {org} is in memory but not on disk"
        ))));
    };
    let mut m: MemberRecord = decode(&v, "member").map_err(abort)?;
    f(&mut m);
    members.insert(key, enc(&m)?)?;
    Ok(())
}

/// The issue event a new refresh record `r` carries inside it when `e`,
/// an event of the same batch, is its issue's: the record then says all
/// the event says ([`RefreshRecord::issue_event`] writes it out again,
/// field for field), and the issue is one insert. sled's own layout: the
/// store commits the record and the event as two changes.
fn carried(r: &RefreshRecord, e: &EventRecord) -> Option<IssueEvent> {
    let assigned = match e.action.as_str() {
        "token.generate" => false,
        "token.assign" => true,
        _ => return None,
    };
    let fits = r.issue.is_none()
        && e.org == r.org
        && e.actor == r.created_by
        && e.at == r.created_at
        && e.last_at == r.created_at
        && e.count == 1
        && e.outcome == "ok"
        && e.target.as_deref() == Some(issue_target(&r.id, &r.user).as_str());
    fits.then_some(IssueEvent {
        seq: e.seq,
        assigned,
    })
}

/// Which of a batch's events its new refresh records carry.
#[derive(Default)]
struct Carries {
    /// By the index of the `IssueRefresh`: the event it carries.
    issue: HashMap<usize, IssueEvent>,
    /// The indices of the events carried (not written to the events tree).
    events: Vec<usize>,
}

fn carried_events(changes: &[Change]) -> Carries {
    let mut out = Carries::default();
    for (i, c) in changes.iter().enumerate() {
        let Change::IssueRefresh(r) = c else { continue };
        for (j, e) in changes.iter().enumerate() {
            let Change::Event(e) = e else { continue };
            if out.events.contains(&j) {
                continue;
            }
            if let Some(ie) = carried(r, e) {
                out.issue.insert(i, ie);
                out.events.push(j);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
