//! The reference model: the store's semantics in plain maps, with the
//! settings of the store under test that those semantics depend on.

use std::collections::BTreeMap;

use tokenvault::{Role, TokenId, TokenInfo, TokenState};

use super::ops::{Opts, CLIENTS, SCOPES};

/// Access token lifetime of the store under test.
pub const ACCESS_TTL: u64 = 300;
/// Live access tokens per refresh token.
pub const CAP: usize = 3;
/// Retention of revoked and expired refresh records.
pub const RETENTION: u64 = 600;
/// How long a pending assignment waits to be claimed (the default).
pub const PENDING_WINDOW: u64 = 7 * 86_400;
/// Live refresh tokens a member may hold (small, so that sequences reach it).
pub const LIVE_CAP: usize = 4;
/// How long a token spent by a rotation on use keeps working.
pub const LEEWAY: u64 = 30;
/// Who revokes a family on reuse, and why.
pub const REUSE_BY: &str = "tokenvault";
pub const REUSE_REASON: &str = "reuse detected";

fn scope_order(s: &str) -> usize {
    SCOPES.iter().position(|x| *x == s).unwrap_or(usize::MAX)
}

/// The scopes of the default policy for a role.
pub fn policy(role: Role) -> &'static [&'static str] {
    match role {
        Role::Stakeholder => &SCOPES[..2],
        Role::User => &SCOPES[..3],
        Role::Admin => &SCOPES[..7],
        Role::Owner => &SCOPES[..],
    }
}

pub type Id = [u8; 16];
/// What a model call answers: a value or the error's `kind()`.
pub type MResult<T> = Result<T, &'static str>;

#[derive(Debug, Clone)]
pub(crate) struct MemberM {
    role: Role,
    not_before: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshM {
    org: String,
    user: String,
    role_at_issue: Role,
    scopes: Vec<String>,
    label: Option<String>,
    created_at: u64,
    created_by: String,
    expires_at: Option<u64>,
    /// The stored state: `(at, by, reason)` once revoked.
    revoked: Option<(u64, String, Option<String>)>,
    last_refresh: Option<u64>,
    /// The client of the last exchange (`CLIENTS[i]`), if it named one.
    client: Option<u8>,
    /// Access ids, oldest first.
    live: Vec<Id>,
    /// Suspended (`disable`) and not enabled since.
    disabled: bool,
    /// Rotated (its expiry lowered to the end of the grace period).
    rotated: bool,
    /// Assigned pending: claimable until then (0: not pending).
    pending_until: u64,
    /// Spent by a rotation on use: dies then (0: not spent).
    spent_until: u64,
    /// The original of its rotation-on-use family (`None`: itself).
    family: Option<Id>,
}

impl RefreshM {
    /// The token that replaces this one in a rotation (with a grace period
    /// or on use): its owner, label and scopes (those `allowed` keeps),
    /// new, unused and live.
    fn successor(
        &self,
        role: Role,
        allowed: &[&str],
        now: u64,
        created_by: String,
        expires_at: Option<u64>,
        family: Option<Id>,
    ) -> RefreshM {
        let scopes = self
            .scopes
            .iter()
            .filter(|s| allowed.contains(&s.as_str()))
            .cloned()
            .collect();
        RefreshM {
            label: self.label.clone(),
            expires_at,
            family,
            ..RefreshM::issued(&self.org, &self.user, role, scopes, now, created_by)
        }
    }

    /// A token just issued to `user` of `org`: unlabelled, never expiring
    /// and its own family until the caller says otherwise; unused, live.
    fn issued(
        org: &str,
        user: &str,
        role_at_issue: Role,
        scopes: Vec<String>,
        created_at: u64,
        created_by: String,
    ) -> RefreshM {
        RefreshM {
            org: org.into(),
            user: user.into(),
            role_at_issue,
            scopes,
            label: None,
            created_at,
            created_by,
            expires_at: None,
            revoked: None,
            last_refresh: None,
            client: None,
            live: Vec::new(),
            disabled: false,
            rotated: false,
            pending_until: 0,
            spent_until: 0,
            family: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AccessM {
    refresh: Id,
    issued_at: u64,
    expires_at: u64,
    revoked: bool,
    /// The scopes it was narrowed to at exchange, if it was.
    narrow: Option<Vec<String>>,
}

/// What the model expects of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalM {
    pub(crate) org: String,
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) scopes: Vec<String>,
    pub(crate) refresh_id: Id,
    pub(crate) access_id: Id,
    pub(crate) expires_at: u64,
}

/// The store's semantics in plain maps.
#[derive(Debug, Clone)]
pub struct Model {
    pub(crate) now: u64,
    pub(crate) members: BTreeMap<(String, String), MemberM>,
    pub(crate) org_cut: BTreeMap<String, u64>,
    pub(crate) refresh: BTreeMap<Id, RefreshM>,
    pub(crate) access: BTreeMap<Id, AccessM>,
    /// Organizations' policies: maximum lifetime, unused expiry.
    pub(crate) policy: BTreeMap<String, (Option<u64>, Option<u64>)>,
    /// Organizations that rotate refresh tokens on use.
    pub(crate) rotate_on_use: BTreeMap<String, bool>,
}

fn id_ok(s: &str, org: bool) -> bool {
    !(s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) || (org && s.contains('/')))
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

impl Model {
    pub(crate) fn new(now: u64) -> Self {
        Model {
            now,
            members: BTreeMap::new(),
            org_cut: BTreeMap::new(),
            refresh: BTreeMap::new(),
            access: BTreeMap::new(),
            policy: BTreeMap::new(),
            rotate_on_use: BTreeMap::new(),
        }
    }

    pub(crate) fn role(&self, org: &str, user: &str) -> Option<Role> {
        self.members
            .get(&(org.to_string(), user.to_string()))
            .map(|m| m.role)
    }

    fn owner(&self, org: &str) -> Option<String> {
        self.members
            .iter()
            .find(|((o, _), m)| o == org && m.role == Role::Owner)
            .map(|((_, u), _)| u.clone())
    }

    fn cutoff(&self, r: &RefreshM) -> u64 {
        let member = self
            .members
            .get(&(r.org.clone(), r.user.clone()))
            .map_or(0, |m| m.not_before);
        member.max(self.org_cut.get(&r.org).copied().unwrap_or(0))
    }

    /// Revoked in effect: stored as revoked, holder gone, or under a cutoff.
    pub(crate) fn is_revoked(&self, r: &RefreshM) -> bool {
        r.revoked.is_some() || self.role(&r.org, &r.user).is_none() || r.created_at < self.cutoff(r)
    }

    pub(crate) fn is_expired(&self, r: &RefreshM) -> bool {
        self.ends_at(r) <= self.now
    }

    /// When a token stops by expiry: its own, or its organization's
    /// maximum lifetime or unused expiry (from its last exchange).
    fn ends_at(&self, r: &RefreshM) -> u64 {
        let own = r
            .expires_at
            .unwrap_or(u64::MAX)
            .min(match r.pending_until {
                0 => u64::MAX,
                t => t,
            })
            .min(match r.spent_until {
                0 => u64::MAX,
                t => t,
            });
        let (max, unused) = self.policy.get(&r.org).copied().unwrap_or((None, None));
        let last_used = r.last_refresh.unwrap_or(0).max(r.created_at);
        let life = max.map_or(u64::MAX, |m| r.created_at.saturating_add(m));
        let idle = unused.map_or(u64::MAX, |u| last_used.saturating_add(u));
        own.min(life).min(idle)
    }

    /// The expiry a token issued now gets under its organization's maximum
    /// lifetime (`cap`: cut to it rather than refused).
    fn expiry_within(&self, org: &str, asked: Option<u64>, cap: bool) -> MResult<Option<u64>> {
        let Some(max) = self.policy.get(org).and_then(|p| p.0) else {
            return Ok(asked);
        };
        let limit = self.now + max;
        match asked {
            None => Ok(Some(limit)),
            Some(at) if at <= limit => Ok(Some(at)),
            Some(_) if cap => Ok(Some(limit)),
            Some(_) => Err("usage"),
        }
    }

    pub(crate) fn set_policy(
        &mut self,
        org: &str,
        actor: &str,
        max: Option<u64>,
        unused: Option<u64>,
        rotate_on_use: bool,
    ) -> MResult<()> {
        if max == Some(0) || unused == Some(0) {
            return Err("usage");
        }
        if self.role(org, actor).ok_or("forbidden")? != Role::Owner {
            return Err("forbidden");
        }
        self.policy.insert(org.into(), (max, unused));
        self.rotate_on_use.insert(org.into(), rotate_on_use);
        Ok(())
    }

    /// Suspended, and neither revoked nor expired (those are said first).
    pub(crate) fn is_disabled(&self, r: &RefreshM) -> bool {
        r.disabled && !self.is_revoked(r) && !self.is_expired(r)
    }

    /// The checks `disable`, `enable` and `rotate` share: the actor is a
    /// member, the token is theirs or they are its Owner (another
    /// organization's token is an unknown one).
    fn holder_or_owner(&self, org: &str, actor: &str, id: Option<&Id>) -> MResult<Id> {
        let role = self.role(org, actor).ok_or("forbidden")?;
        let id = id.ok_or("not_found")?;
        let r = self.refresh.get(id).ok_or("not_found")?;
        if r.org != org {
            return Err("not_found");
        }
        if r.user != actor && role != Role::Owner {
            return Err("forbidden");
        }
        Ok(*id)
    }

    /// `disable` (`disable: true`) or `enable`.
    pub(crate) fn suspend(
        &mut self,
        org: &str,
        actor: &str,
        id: Option<&Id>,
        disable: bool,
    ) -> MResult<TokenInfo> {
        let id = self.holder_or_owner(org, actor, id)?;
        let r = &self.refresh[&id];
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        if r.pending_until != 0 {
            return Err("conflict");
        }
        self.refresh.get_mut(&id).expect("held").disabled = disable;
        Ok(self.info(&id))
    }

    /// Checks a rotation with `grace` seconds; on success returns the new
    /// record (without id) and when the old one dies. [`Model::rotate_apply`]
    /// makes it so.
    pub(crate) fn rotate_check(
        &self,
        org: &str,
        actor: &str,
        id: Option<&Id>,
        grace: u64,
    ) -> MResult<(RefreshM, u64)> {
        if grace > 7 * 86_400 {
            return Err("usage");
        }
        let id = self.holder_or_owner(org, actor, id)?;
        let r = &self.refresh[&id];
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if r.rotated || (r.pending_until != 0 && !self.is_expired(r)) {
            return Err("conflict");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        if r.disabled {
            return Err("disabled");
        }
        let role = self
            .role(&r.org, &r.user)
            .expect("not revoked, so a member");
        let allowed = policy(role);
        let dies_at = (self.now + grace).min(r.expires_at.unwrap_or(u64::MAX));
        let expires_at = self.expiry_within(&r.org, r.expires_at, true)?;
        let new = r.successor(role, allowed, self.now, actor.into(), expires_at, None);
        Ok((new, dies_at))
    }

    /// Applies a rotation [`Model::rotate_check`] allowed.
    pub(crate) fn rotate_apply(&mut self, old: &Id, new_id: Id, new: RefreshM, dies_at: u64) {
        let r = self.refresh.get_mut(old).expect("old");
        r.rotated = true;
        r.expires_at = Some(dies_at);
        self.refresh.insert(new_id, new);
    }

    /// Presenting the token `id` (its secret matched) to an exchange or a
    /// refresh: if it is spent and past its leeway (and not revoked in
    /// effect), that is a reuse, and every stored-active token of its
    /// family is revoked. Returns whether it was.
    pub(crate) fn reuse(&mut self, id: &Id) -> bool {
        if !self.would_reuse(id) {
            return false;
        }
        let r = &self.refresh[id];
        let (org, user, family) = (r.org.clone(), r.user.clone(), r.family.unwrap_or(*id));
        let now = self.now;
        for (rid, t) in self.refresh.iter_mut() {
            if t.org == org
                && t.user == user
                && t.family.unwrap_or(*rid) == family
                && t.revoked.is_none()
            {
                t.revoked = Some((now, REUSE_BY.into(), Some(REUSE_REASON.into())));
            }
        }
        true
    }

    /// Whether presenting the token `id` now is a reuse (see
    /// [`Model::reuse`]).
    pub(crate) fn would_reuse(&self, id: &Id) -> bool {
        self.refresh
            .get(id)
            .is_some_and(|r| r.spent_until != 0 && !self.is_revoked(r) && self.is_expired(r))
    }

    /// Checks an OAuth refresh of `id` (after [`Model::reuse`]) narrowed
    /// to `scopes` (none: not narrowed): `Ok(None)` for a plain exchange,
    /// `Ok(Some((successor without id, dies_at)))` for a rotation on use.
    pub(crate) fn oauth_check(&self, id: &Id, scopes: &[&str]) -> MResult<Option<(RefreshM, u64)>> {
        let r = self.refresh.get(id).ok_or("invalid_token")?;
        let rotates = r.spent_until != 0
            || (self.rotate_on_use.get(&r.org).copied().unwrap_or(false) && !r.rotated);
        if !rotates {
            return match scopes {
                [] => self.exchange_check(id),
                s => self.exchange_scoped_check(id, s),
            }
            .map(|_| None);
        }
        if r.pending_until != 0 {
            return Err("invalid_token");
        }
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        if r.disabled {
            return Err("disabled");
        }
        let role = self.role(&r.org, &r.user).ok_or("revoked")?;
        let allowed = policy(role);
        for s in scopes {
            if !(allowed.contains(s) && r.scopes.iter().any(|t| t == s)) {
                return Err("insufficient_scope");
            }
        }
        let dies_at = (self.now + LEEWAY).min(r.expires_at.unwrap_or(u64::MAX));
        let expires_at = self.expiry_within(&r.org, r.expires_at, true)?;
        let new = r.successor(
            role,
            allowed,
            self.now,
            r.created_by.clone(),
            expires_at,
            Some(r.family.unwrap_or(*id)),
        );
        Ok(Some((new, dies_at)))
    }

    /// Applies a rotation on use [`Model::oauth_check`] allowed.
    pub(crate) fn spend_apply(&mut self, old: &Id, new_id: Id, new: RefreshM, dies_at: u64) {
        let r = self.refresh.get_mut(old).expect("old");
        r.rotated = true;
        r.spent_until = match r.spent_until {
            0 => dies_at,
            t => t.min(dies_at),
        };
        self.refresh.insert(new_id, new);
    }

    pub(crate) fn info(&self, id: &Id) -> TokenInfo {
        let r = &self.refresh[id];
        let state = match &r.revoked {
            Some((at, by, reason)) => TokenState::Revoked {
                at: *at,
                by: by.clone(),
                reason: reason.clone(),
            },
            None if self.is_revoked(r) => TokenState::Revoked {
                at: self.cutoff(r),
                by: "host".into(),
                reason: Some("cutoff or membership".into()),
            },
            None if self.is_expired(r) => TokenState::Expired,
            None if r.pending_until != 0 => TokenState::Pending,
            None if r.disabled => TokenState::Disabled,
            None => TokenState::Active,
        };
        TokenInfo {
            id: TokenId::from_bytes(*id),
            org: r.org.clone(),
            user: r.user.clone(),
            role_at_issue: r.role_at_issue,
            scopes: r.scopes.clone(),
            label: r.label.clone(),
            created_at: r.created_at,
            created_by: r.created_by.clone(),
            expires_at: match r.spent_until {
                0 => r.expires_at,
                t => Some(r.expires_at.map_or(t, |e| e.min(t))),
            },
            last_refresh: r.last_refresh,
            last_used_ip: r
                .client
                .and_then(|c| CLIENTS[c as usize].0.map(|ip| ip.parse().unwrap())),
            last_used_agent: r
                .client
                .and_then(|c| CLIENTS[c as usize].1)
                .filter(|a| !a.contains("tvr_"))
                .map(String::from),
            state,
        }
    }

    pub(crate) fn list(&self, org: &str, user: Option<&str>) -> Vec<TokenInfo> {
        let mut ids: Vec<(u64, Id)> = self
            .refresh
            .iter()
            .filter(|(_, r)| r.org == org && user.is_none_or(|u| r.user == u))
            .map(|(id, r)| (r.created_at, *id))
            .collect();
        ids.sort();
        ids.iter().map(|(_, id)| self.info(id)).collect()
    }

    pub(crate) fn members_of(&self, org: &str) -> Vec<(String, Role)> {
        self.members
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, u), m)| (u.clone(), m.role))
            .collect()
    }

    pub(crate) fn add_member(&mut self, org: &str, user: &str, role: Role) -> MResult<()> {
        if !id_ok(org, true) || !id_ok(user, false) {
            return Err("usage");
        }
        if self.role(org, user).is_some() {
            return Err("conflict");
        }
        if role == Role::Owner && self.owner(org).is_some() {
            return Err("conflict");
        }
        self.members.insert(
            (org.into(), user.into()),
            MemberM {
                role,
                not_before: 0,
            },
        );
        Ok(())
    }

    pub(crate) fn set_role(&mut self, org: &str, user: &str, role: Role) -> MResult<()> {
        let current = self.role(org, user).ok_or("not_found")?;
        if (role == Role::Owner) != (current == Role::Owner) {
            return Err("conflict");
        }
        self.members
            .get_mut(&(org.into(), user.into()))
            .expect("member")
            .role = role;
        Ok(())
    }

    pub(crate) fn transfer(&mut self, org: &str, user: &str) -> MResult<()> {
        let current = self.role(org, user).ok_or("not_found")?;
        if current == Role::Owner {
            return Ok(());
        }
        if let Some(old) = self.owner(org) {
            self.members
                .get_mut(&(org.into(), old))
                .expect("owner")
                .role = Role::Admin;
        }
        self.members
            .get_mut(&(org.into(), user.into()))
            .expect("member")
            .role = Role::Owner;
        Ok(())
    }

    /// Marks every stored-active record of `org` (one user, or all) created
    /// before `cut` as revoked; returns how many.
    fn revoke_records(
        &mut self,
        org: &str,
        user: Option<&str>,
        cut: u64,
        by: &str,
        reason: &str,
    ) -> usize {
        let now = self.now;
        let mut n = 0;
        for r in self.refresh.values_mut() {
            if r.org == org
                && user.is_none_or(|u| r.user == u)
                && r.revoked.is_none()
                && r.created_at < cut
            {
                r.revoked = Some((now, by.into(), Some(reason.into())));
                n += 1;
            }
        }
        n
    }

    pub(crate) fn remove_member(&mut self, org: &str, user: &str) -> MResult<usize> {
        let current = self.role(org, user).ok_or("not_found")?;
        if current == Role::Owner {
            return Err("conflict");
        }
        let n = self.revoke_records(org, Some(user), u64::MAX, "host", "member removed");
        self.members.remove(&(org.into(), user.into()));
        Ok(n)
    }

    /// Checks generate/assign; on success returns the record to insert
    /// (without id).
    pub(crate) fn issue(
        &self,
        org: &str,
        actor: &str,
        to: Option<&str>,
        o: &Opts,
    ) -> MResult<RefreshM> {
        if o.label.is_some_and(|l| !text_ok(l, 256)) || o.expires_in == Some(0) {
            return Err("usage");
        }
        let role = self.role(org, actor).ok_or("forbidden")?;
        if to.is_some() && role != Role::Owner {
            return Err("forbidden");
        }
        let subject = to.unwrap_or(actor);
        let subject_role = self.role(org, subject).ok_or("not_found")?;
        let allowed = policy(subject_role);
        let mut scopes: Vec<String> = match &o.scopes {
            None => allowed.iter().map(|s| s.to_string()).collect(),
            Some(req) if req.is_empty() => return Err("usage"),
            Some(req) => {
                if req.iter().any(|s| !allowed.contains(s)) {
                    return Err("usage");
                }
                req.iter().map(|s| s.to_string()).collect()
            }
        };
        scopes.sort_by_key(|s| scope_order(s));
        scopes.dedup();
        let expires_at = self.expiry_within(org, o.expires_in.map(|s| self.now + s), false)?;
        let live = self
            .refresh
            .values()
            .filter(|r| r.org == org && r.user == subject)
            .filter(|r| !self.is_revoked(r) && !self.is_expired(r))
            .count();
        if live >= LIVE_CAP {
            return Err("limit");
        }
        Ok(RefreshM {
            label: o.label.map(Into::into),
            expires_at,
            ..RefreshM::issued(org, subject, subject_role, scopes, self.now, actor.into())
        })
    }

    /// Marks a record just issued as pending (`assign_pending`).
    pub(crate) fn make_pending(r: &mut RefreshM, now: u64) {
        r.pending_until = now + PENDING_WINDOW;
    }

    /// `claim` by `actor` of the token `id`; on success, its info.
    pub(crate) fn claim(&mut self, org: &str, actor: &str, id: Option<&Id>) -> MResult<TokenInfo> {
        self.role(org, actor).ok_or("forbidden")?;
        let id = *id.ok_or("not_found")?;
        let r = self.refresh.get(&id).ok_or("not_found")?;
        if r.org != org {
            return Err("not_found");
        }
        if r.user != actor {
            return Err("forbidden");
        }
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        if r.pending_until == 0 {
            return Err("conflict");
        }
        self.refresh.get_mut(&id).expect("held").pending_until = 0;
        Ok(self.info(&id))
    }

    /// Checks an exchange of refresh token `id`; `Ok` holds the access
    /// token's expiry.
    pub(crate) fn exchange_check(&self, id: &Id) -> MResult<u64> {
        let r = self.refresh.get(id).ok_or("invalid_token")?;
        // A pending token has no secret yet: none presented matches.
        if r.pending_until != 0 {
            return Err("invalid_token");
        }
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        if r.disabled {
            return Err("disabled");
        }
        // A spent token's access tokens die with it at the leeway's end.
        let spent = match r.spent_until {
            0 => u64::MAX,
            t => t,
        };
        Ok((self.now + ACCESS_TTL)
            .min(r.expires_at.unwrap_or(u64::MAX))
            .min(spent))
    }

    /// Checks an exchange narrowed to `scopes`: as [`Model::exchange_check`],
    /// then each must be among the scopes the token grants now.
    pub(crate) fn exchange_scoped_check(&self, id: &Id, scopes: &[&str]) -> MResult<u64> {
        let expires_at = self.exchange_check(id)?;
        let r = &self.refresh[id];
        let role = self.role(&r.org, &r.user).ok_or("revoked")?;
        let allowed = policy(role);
        for s in scopes {
            if !(allowed.contains(s) && r.scopes.iter().any(|t| t == s)) {
                return Err("insufficient_scope");
            }
        }
        Ok(expires_at)
    }

    /// Records the client of the exchange just applied.
    pub(crate) fn exchange_client(&mut self, id: &Id, client: u8) {
        self.refresh.get_mut(id).expect("refresh").client = Some(client);
    }

    pub(crate) fn exchange_apply(&mut self, id: &Id, access: Id, expires_at: u64) {
        self.exchange_apply_narrowed(id, access, expires_at, None);
    }

    pub(crate) fn exchange_apply_narrowed(
        &mut self,
        id: &Id,
        access: Id,
        expires_at: u64,
        narrow: Option<Vec<String>>,
    ) {
        let now = self.now;
        let r = self.refresh.get_mut(id).expect("refresh");
        while r.live.len() >= CAP {
            let old = r.live.remove(0);
            self.access.remove(&old);
        }
        r.live.push(access);
        r.last_refresh = Some(now);
        r.client = None;
        self.access.insert(
            access,
            AccessM {
                refresh: *id,
                issued_at: now,
                expires_at,
                revoked: false,
                narrow,
            },
        );
    }

    pub(crate) fn verify(&self, access: &Id) -> MResult<PrincipalM> {
        let a = self.access.get(access).ok_or("invalid_token")?;
        let r = &self.refresh[&a.refresh];
        if a.revoked || self.is_revoked(r) {
            return Err("revoked");
        }
        let role = self.role(&r.org, &r.user).ok_or("revoked")?;
        if a.expires_at <= self.now || self.is_expired(r) {
            return Err("expired");
        }
        if r.disabled {
            return Err("disabled");
        }
        let allowed = policy(role);
        Ok(PrincipalM {
            org: r.org.clone(),
            user: r.user.clone(),
            role,
            scopes: r
                .scopes
                .iter()
                .filter(|s| allowed.contains(&s.as_str()))
                .filter(|s| a.narrow.as_ref().is_none_or(|n| n.contains(s)))
                .cloned()
                .collect(),
            refresh_id: a.refresh,
            access_id: *access,
            expires_at: a.expires_at,
        })
    }

    pub(crate) fn list_own(&self, org: &str, user: &str) -> MResult<Vec<TokenInfo>> {
        self.role(org, user).ok_or("forbidden")?;
        Ok(self.list(org, Some(user)))
    }

    pub(crate) fn list_org(&self, org: &str, user: &str) -> MResult<Vec<TokenInfo>> {
        if self.role(org, user).ok_or("forbidden")? != Role::Owner {
            return Err("forbidden");
        }
        Ok(self.list(org, None))
    }

    pub(crate) fn revoke(
        &mut self,
        org: &str,
        actor: &str,
        id: Option<&Id>,
        reason: Option<&str>,
    ) -> MResult<()> {
        if reason.is_some_and(|r| !text_ok(r, 512)) {
            return Err("usage");
        }
        let role = self.role(org, actor).ok_or("forbidden")?;
        let id = id.ok_or("not_found")?;
        let now = self.now;
        let r = self.refresh.get_mut(id).ok_or("not_found")?;
        if r.org != org {
            return Err("forbidden");
        }
        if r.user != actor && role != Role::Owner {
            return Err("forbidden");
        }
        if r.revoked.is_none() {
            r.revoked = Some((now, actor.into(), reason.map(Into::into)));
        }
        Ok(())
    }

    pub(crate) fn revoke_all(
        &mut self,
        org: &str,
        actor: &str,
        member: Option<&str>,
        before: Option<u64>,
    ) -> MResult<usize> {
        let role = self.role(org, actor).ok_or("forbidden")?;
        match member {
            Some(u) if u != actor && role != Role::Owner => return Err("forbidden"),
            None if role != Role::Owner => return Err("forbidden"),
            _ => {}
        }
        if before.is_some_and(|t| t > self.now) {
            return Err("usage");
        }
        let reason = if before.is_some() {
            "revoked before cutoff"
        } else {
            "bulk revocation"
        };
        let n = self.revoke_records(org, member, before.unwrap_or(u64::MAX), actor, reason);
        if let Some(t) = before {
            match member {
                Some(u) => {
                    if let Some(m) = self.members.get_mut(&(org.into(), u.into())) {
                        m.not_before = m.not_before.max(t);
                    }
                }
                None => {
                    let c = self.org_cut.entry(org.into()).or_insert(0);
                    *c = (*c).max(t);
                }
            }
        }
        Ok(n)
    }

    pub(crate) fn revoke_access(&mut self, access: &Id) -> MResult<()> {
        let a = self.access.get_mut(access).ok_or("invalid_token")?;
        a.revoked = true;
        Ok(())
    }

    /// Everything a purge (run until `more` is false) removes: `(access,
    /// refresh)` counts.
    pub(crate) fn purge(&mut self) -> (u64, u64) {
        let now = self.now;
        let dead: Vec<Id> = self
            .refresh
            .iter()
            .filter(|(_, r)| {
                let gone_since = if self.is_revoked(r) {
                    Some(r.revoked.as_ref().map_or(0, |x| x.0))
                } else if self.is_expired(r) {
                    Some(self.ends_at(r))
                } else {
                    None
                };
                gone_since.is_some_and(|t| t + RETENTION <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut access_removed = 0;
        for id in &dead {
            let r = self.refresh.remove(id).expect("dead");
            for a in r.live {
                self.access.remove(&a);
                access_removed += 1;
            }
        }
        let useless: Vec<Id> = self
            .access
            .iter()
            .filter(|(_, a)| {
                let r = &self.refresh[&a.refresh];
                a.expires_at <= now || a.revoked || self.is_revoked(r) || self.is_expired(r)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &useless {
            let a = self.access.remove(id).expect("useless");
            let r = self.refresh.get_mut(&a.refresh).expect("parent");
            r.live.retain(|x| x != id);
            access_removed += 1;
        }
        (access_removed, dead.len() as u64)
    }

    pub(crate) fn audit(&self, org: &str, user: &str) -> MResult<()> {
        if self.role(org, user).ok_or("forbidden")? != Role::Owner {
            return Err("forbidden");
        }
        Ok(())
    }

    /// What a reopen changes: nothing in the order of a family's live
    /// access tokens. The store reads it back from the records, by issue
    /// time and, within a second, by the order of issue an access id
    /// carries in its bytes 1 to 7; this sorts by that rule, so that a
    /// store that lost the order (say, by sorting on the whole id) fails.
    pub(crate) fn reopened(&mut self) {
        let access = &self.access;
        let order = |a: &Id| {
            let mut b = [0u8; 8];
            b[1..].copy_from_slice(&a[1..8]);
            u64::from_be_bytes(b)
        };
        for r in self.refresh.values_mut() {
            r.live.sort_by_key(|a| (access[a].issued_at, order(a)));
        }
    }
}
