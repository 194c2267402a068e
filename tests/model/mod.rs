//! A model of the store's semantics in plain maps, the operations that drive
//! the store and the model side by side, and the runner that compares them.
//!
//! Shared by `tests/model_ops.rs` (proptest), `tests/fuzz_corpus.rs` (replay
//! of the committed fuzz corpus) and the `ops` target of the fuzz crate,
//! which includes this file with `#[path]`. Operations are decoded from
//! bytes (eight bytes each, see [`decode_op`]) so that proptest and the
//! fuzzer share one generator. The universe is small on purpose: two
//! organizations, four users, a handful of tokens, so that sequences keep
//! coming back to the same members and tokens.
//!
//! After every operation the runner compares the call's result with the
//! model's and then checks the store as a whole ([`Harness::check`]):
//! DESIGN.md's invariants 2 (revoked stays revoked), 3 (scopes within the
//! current role), 4 (a failed call changes nothing), 6 (`check_integrity` is
//! clean, and a reopened store equals the model) and 7 (orgs are isolated).

#![allow(dead_code)]

pub mod targets;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokenvault::token::{decode_raw, encode_raw, inspect};
use tokenvault::{
    Actor, Config, GenerateOptions, ManualClock, Principal, RevokeScope, Role, StoreKey, TokenId,
    TokenInfo, TokenKind, TokenState, TokenStore,
};

/// The organizations of the universe; index 255 stands for an invalid id.
pub const ORGS: [&str; 2] = ["acme", "beta"];
/// The users of the universe; index 255 stands for an invalid (empty) id.
pub const USERS: [&str; 4] = ["ann", "bob", "cat", "dan"];
/// The default policy's scopes, in the policy's order.
pub const SCOPES: [&str; 8] = [
    "read",
    "squad-read",
    "incident-write",
    "service-write",
    "squad-create",
    "squad-update",
    "user-write",
    "org-admin",
];
/// A scope the policy does not know.
pub const UNKNOWN_SCOPE: &str = "billing";
/// The clock's start.
pub const START: u64 = 1_700_000_000;
/// Access token lifetime of the store under test.
pub const ACCESS_TTL: u64 = 300;
/// Live access tokens per refresh token.
pub const CAP: usize = 3;
/// Retention of revoked and expired refresh records.
pub const RETENTION: u64 = 600;
/// Live refresh tokens a member may hold (small, so that sequences reach it).
pub const LIVE_CAP: usize = 4;
/// Token prefix.
pub const PREFIX: &str = "tv";
/// Longest operation sequence taken from one input.
pub const MAX_OPS: usize = 64;
/// Bytes per encoded operation.
pub const OP_BYTES: usize = 8;

const KEY: [u8; 32] = [42; 32];
const ADVANCES: [u64; 8] = [1, 1, 30, 299, 300, 301, 601, 3600];

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

// ---------------------------------------------------------------- operations

/// A token argument, resolved against the tokens issued so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// The i-th issued token of the kind the call expects.
    Own(u8),
    /// The i-th issued token of the other kind (always malformed here).
    Other(u8),
    /// The id of the i-th issued token of the expected kind, wrong secret.
    WrongSecret(u8),
    /// A well-formed token whose id the store never issued.
    Unknown(u8),
    /// A malformed string.
    Garbage(u8),
}

/// Options of generate and assign, in small encoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    /// `None`, a good label, or one with a control character.
    pub label: Option<&'static str>,
    /// Narrowed scopes (may hold an unknown one, or be empty).
    pub scopes: Option<Vec<&'static str>>,
    /// Seconds to expiry (0 is invalid).
    pub expires_in: Option<u64>,
}

/// A cutoff for `revoke_all`, relative to the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// `now - secs`.
    Ago(u64),
    /// `now + secs`: in the future, refused.
    Ahead(u64),
}

/// One public call of the store (or a clock move, or a reopen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddMember {
        org: u8,
        user: u8,
        role: Role,
    },
    SetRole {
        org: u8,
        user: u8,
        role: Role,
    },
    Transfer {
        org: u8,
        user: u8,
    },
    RemoveMember {
        org: u8,
        user: u8,
    },
    Generate {
        org: u8,
        user: u8,
        opts: Opts,
    },
    Assign {
        org: u8,
        actor: u8,
        user: u8,
        opts: Opts,
    },
    Exchange(Tok),
    Verify(Tok),
    Authorize(Tok, &'static str),
    ListOwn {
        org: u8,
        user: u8,
    },
    ListOrg {
        org: u8,
        user: u8,
    },
    Revoke {
        org: u8,
        user: u8,
        tok: Tok,
        reason: Option<&'static str>,
    },
    RevokeAll {
        org: u8,
        user: u8,
        member: Option<u8>,
        before: Option<Before>,
    },
    RevokeAccess(Tok),
    Purge {
        limit: usize,
    },
    Audit {
        org: u8,
        user: u8,
    },
    Advance(u64),
    Flush,
    Reopen,
}

/// Reads bytes, giving zeros once the input is used up.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
}

fn org_ix(b: u8) -> u8 {
    if b == 255 {
        255
    } else {
        b % ORGS.len() as u8
    }
}

fn user_ix(b: u8) -> u8 {
    if b == 255 {
        255
    } else {
        b % USERS.len() as u8
    }
}

fn org_name(i: u8) -> &'static str {
    ORGS.get(i as usize).copied().unwrap_or("bad/org")
}

fn user_name(i: u8) -> &'static str {
    USERS.get(i as usize).copied().unwrap_or("")
}

fn tok(kind: u8, i: u8) -> Tok {
    match kind % 16 {
        0..=10 => Tok::Own(i),
        11 => Tok::Other(i),
        12 => Tok::WrongSecret(i),
        13 => Tok::Unknown(i),
        14 => Tok::Garbage(i),
        _ => Tok::Own(i.wrapping_add(1)),
    }
}

fn opts(label: u8, scopes: u8, expiry: u8) -> Opts {
    let label = match label % 8 {
        6 => Some("ci"),
        7 => Some("bad\nlabel"),
        _ => None,
    };
    let scopes = if scopes % 8 < 6 {
        None
    } else {
        let bits = scopes >> 3;
        let pick = [
            "read",
            "incident-write",
            "user-write",
            "org-admin",
            UNKNOWN_SCOPE,
        ];
        Some(
            pick.iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, s)| *s)
                .collect(),
        )
    };
    let expires_in = match expiry % 8 {
        0..=4 => None,
        5 => Some(0),
        6 => Some(100),
        _ => Some(1000),
    };
    Opts {
        label,
        scopes,
        expires_in,
    }
}

fn role(b: u8) -> Role {
    Role::ALL[(b % 4) as usize]
}

/// Decodes one operation from (up to) [`OP_BYTES`] bytes: a tag byte picks
/// the call, the next bytes its arguments.
pub fn decode_op(r: &mut Bytes<'_>) -> Op {
    let tag = r.u8() % 32;
    let (a, b, c, d, e, f, g) = (r.u8(), r.u8(), r.u8(), r.u8(), r.u8(), r.u8(), r.u8());
    match tag {
        0 => Op::AddMember {
            org: org_ix(a),
            user: user_ix(b),
            role: role(c),
        },
        1 => Op::SetRole {
            org: org_ix(a),
            user: user_ix(b),
            role: role(c),
        },
        2 => Op::Transfer {
            org: org_ix(a),
            user: user_ix(b),
        },
        3 => Op::RemoveMember {
            org: org_ix(a),
            user: user_ix(b),
        },
        4..=6 => Op::Generate {
            org: org_ix(a),
            user: user_ix(b),
            opts: opts(c, d, e),
        },
        7 => Op::Assign {
            org: org_ix(a),
            actor: user_ix(b),
            user: user_ix(c),
            opts: opts(d, e, f),
        },
        8..=11 => Op::Exchange(tok(a, b)),
        12..=14 => Op::Verify(tok(a, b)),
        15 => Op::Authorize(
            tok(a, b),
            SCOPES
                .get((c % 9) as usize)
                .copied()
                .unwrap_or(UNKNOWN_SCOPE),
        ),
        16 => Op::ListOwn {
            org: org_ix(a),
            user: user_ix(b),
        },
        17 => Op::ListOrg {
            org: org_ix(a),
            user: user_ix(b),
        },
        18..=19 => Op::Revoke {
            org: org_ix(a),
            user: user_ix(b),
            tok: tok(c, d),
            reason: match e % 4 {
                0 => None,
                1 => Some("lost"),
                2 => Some("rotated"),
                _ => Some("bad\u{0}reason"),
            },
        },
        20..=21 => Op::RevokeAll {
            org: org_ix(a),
            user: user_ix(b),
            member: if c % 3 == 0 { None } else { Some(user_ix(d)) },
            before: match e % 8 {
                0..=2 => None,
                3 => Some(Before::Ago(0)),
                4 => Some(Before::Ago(1)),
                5 => Some(Before::Ago(30)),
                6 => Some(Before::Ago(400)),
                _ => Some(Before::Ahead(5)),
            },
        },
        22 => Op::RevokeAccess(tok(a, b)),
        23 => Op::Purge {
            limit: [0, 1, 2, 1000][(a % 4) as usize],
        },
        24 => Op::Audit {
            org: org_ix(a),
            user: user_ix(b),
        },
        25..=27 => Op::Advance(ADVANCES[(a % 8) as usize]),
        28 => Op::Flush,
        29 => Op::Reopen,
        _ => {
            let _ = g;
            Op::Exchange(tok(a, b))
        }
    }
}

/// Decodes a whole input into at most [`MAX_OPS`] operations.
pub fn decode_ops(data: &[u8]) -> Vec<Op> {
    data.chunks(OP_BYTES)
        .take(MAX_OPS)
        .map(|c| decode_op(&mut Bytes::new(c)))
        .collect()
}

// --------------------------------------------------------------------- model

type Id = [u8; 16];
/// What a model call answers: a value or the error's `kind()`.
pub type MResult<T> = Result<T, &'static str>;

#[derive(Debug, Clone)]
struct MemberM {
    role: Role,
    not_before: u64,
}

#[derive(Debug, Clone)]
struct RefreshM {
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
    /// Access ids, oldest first.
    live: Vec<Id>,
}

#[derive(Debug, Clone)]
struct AccessM {
    refresh: Id,
    issued_at: u64,
    expires_at: u64,
    revoked: bool,
}

/// What the model expects of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalM {
    org: String,
    user: String,
    role: Role,
    scopes: Vec<String>,
    refresh_id: Id,
    access_id: Id,
    expires_at: u64,
}

/// The store's semantics in plain maps.
#[derive(Debug, Clone)]
pub struct Model {
    now: u64,
    members: BTreeMap<(String, String), MemberM>,
    org_cut: BTreeMap<String, u64>,
    refresh: BTreeMap<Id, RefreshM>,
    access: BTreeMap<Id, AccessM>,
}

fn id_ok(s: &str, org: bool) -> bool {
    !(s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) || (org && s.contains('/')))
}

fn text_ok(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

impl Model {
    fn new(now: u64) -> Self {
        Model {
            now,
            members: BTreeMap::new(),
            org_cut: BTreeMap::new(),
            refresh: BTreeMap::new(),
            access: BTreeMap::new(),
        }
    }

    fn role(&self, org: &str, user: &str) -> Option<Role> {
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
    fn is_revoked(&self, r: &RefreshM) -> bool {
        r.revoked.is_some() || self.role(&r.org, &r.user).is_none() || r.created_at < self.cutoff(r)
    }

    fn is_expired(&self, r: &RefreshM) -> bool {
        r.expires_at.is_some_and(|e| e <= self.now)
    }

    fn info(&self, id: &Id) -> TokenInfo {
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
            expires_at: r.expires_at,
            last_refresh: r.last_refresh,
            state,
        }
    }

    fn list(&self, org: &str, user: Option<&str>) -> Vec<TokenInfo> {
        let mut ids: Vec<(u64, Id)> = self
            .refresh
            .iter()
            .filter(|(_, r)| r.org == org && user.is_none_or(|u| r.user == u))
            .map(|(id, r)| (r.created_at, *id))
            .collect();
        ids.sort();
        ids.iter().map(|(_, id)| self.info(id)).collect()
    }

    fn members_of(&self, org: &str) -> Vec<(String, Role)> {
        self.members
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, u), m)| (u.clone(), m.role))
            .collect()
    }

    fn add_member(&mut self, org: &str, user: &str, role: Role) -> MResult<()> {
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

    fn set_role(&mut self, org: &str, user: &str, role: Role) -> MResult<()> {
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

    fn transfer(&mut self, org: &str, user: &str) -> MResult<()> {
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

    fn remove_member(&mut self, org: &str, user: &str) -> MResult<usize> {
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
    fn issue(&self, org: &str, actor: &str, to: Option<&str>, o: &Opts) -> MResult<RefreshM> {
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
            org: org.into(),
            user: subject.into(),
            role_at_issue: subject_role,
            scopes,
            label: o.label.map(Into::into),
            created_at: self.now,
            created_by: actor.into(),
            expires_at: o.expires_in.map(|s| self.now + s),
            revoked: None,
            last_refresh: None,
            live: Vec::new(),
        })
    }

    /// Checks an exchange of refresh token `id`; `Ok` holds the access
    /// token's expiry.
    fn exchange_check(&self, id: &Id) -> MResult<u64> {
        let r = self.refresh.get(id).ok_or("invalid_token")?;
        if self.is_revoked(r) {
            return Err("revoked");
        }
        if self.is_expired(r) {
            return Err("expired");
        }
        Ok((self.now + ACCESS_TTL).min(r.expires_at.unwrap_or(u64::MAX)))
    }

    fn exchange_apply(&mut self, id: &Id, access: Id, expires_at: u64) {
        let now = self.now;
        let r = self.refresh.get_mut(id).expect("refresh");
        while r.live.len() >= CAP {
            let old = r.live.remove(0);
            self.access.remove(&old);
        }
        r.live.push(access);
        r.last_refresh = Some(now);
        self.access.insert(
            access,
            AccessM {
                refresh: *id,
                issued_at: now,
                expires_at,
                revoked: false,
            },
        );
    }

    fn verify(&self, access: &Id) -> MResult<PrincipalM> {
        let a = self.access.get(access).ok_or("invalid_token")?;
        let r = &self.refresh[&a.refresh];
        if a.revoked || self.is_revoked(r) {
            return Err("revoked");
        }
        let role = self.role(&r.org, &r.user).ok_or("revoked")?;
        if a.expires_at <= self.now || self.is_expired(r) {
            return Err("expired");
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
                .cloned()
                .collect(),
            refresh_id: a.refresh,
            access_id: *access,
            expires_at: a.expires_at,
        })
    }

    fn list_own(&self, org: &str, user: &str) -> MResult<Vec<TokenInfo>> {
        self.role(org, user).ok_or("forbidden")?;
        Ok(self.list(org, Some(user)))
    }

    fn list_org(&self, org: &str, user: &str) -> MResult<Vec<TokenInfo>> {
        if self.role(org, user).ok_or("forbidden")? != Role::Owner {
            return Err("forbidden");
        }
        Ok(self.list(org, None))
    }

    fn revoke(
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

    fn revoke_all(
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

    fn revoke_access(&mut self, access: &Id) -> MResult<()> {
        let a = self.access.get_mut(access).ok_or("invalid_token")?;
        a.revoked = true;
        Ok(())
    }

    /// Everything a purge (run until `more` is false) removes: `(access,
    /// refresh)` counts.
    fn purge(&mut self) -> (u64, u64) {
        let now = self.now;
        let dead: Vec<Id> = self
            .refresh
            .iter()
            .filter(|(_, r)| {
                let gone_since = if self.is_revoked(r) {
                    Some(r.revoked.as_ref().map_or(0, |x| x.0))
                } else if self.is_expired(r) {
                    r.expires_at
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

    fn audit(&self, org: &str, user: &str) -> MResult<()> {
        if self.role(org, user).ok_or("forbidden")? != Role::Owner {
            return Err("forbidden");
        }
        Ok(())
    }

    /// What a reopen changes: live access tokens are reloaded ordered by
    /// issue time then id (eviction among tokens of the same second may
    /// pick any of them).
    fn reopened(&mut self) {
        let access = &self.access;
        for r in self.refresh.values_mut() {
            r.live.sort_by_key(|a| (access[a].issued_at, *a));
        }
    }
}

// ------------------------------------------------------------------- harness

/// A store, the model, and the tokens issued so far (secrets live only here,
/// in memory).
pub struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
    store: Option<TokenStore>,
    model: Model,
    refresh: Vec<(Id, String)>,
    access: Vec<(Id, String)>,
    garbage: Vec<String>,
    digest: String,
    /// What the run did, for reports and for choosing seeds.
    pub stats: RunStats,
}

/// Counts of successful calls in a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    /// Operations run.
    pub ops: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Successful exchanges.
    pub exchanges: u64,
    /// Successful revocations of any kind.
    pub revocations: u64,
    /// Reopens.
    pub reopens: u64,
}

fn kind<T>(r: &tokenvault::Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

fn mkind<T>(r: &MResult<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(k) => k,
    }
}

/// A temporary directory, in memory where the machine offers one.
pub fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("tokenvault-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("temporary directory")
}

fn principal_m(p: &Principal) -> PrincipalM {
    PrincipalM {
        org: p.org.to_string(),
        user: p.user.to_string(),
        role: p.role,
        scopes: p.scopes.to_vec(),
        refresh_id: *p.refresh_id.as_bytes(),
        access_id: *p.access_id.as_bytes(),
        expires_at: p.expires_at,
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

fn same<T: std::fmt::Debug, U: std::fmt::Debug>(
    what: &str,
    actual: &tokenvault::Result<T>,
    expected: &MResult<U>,
) -> Result<(), String> {
    ensure!(
        kind(actual) == mkind(expected),
        "{what}: store answered {actual:?}, model expected {expected:?}"
    );
    Ok(())
}

impl Harness {
    /// A store in a fresh directory with two seeded organizations: acme (ann
    /// Owner, bob Admin, cat User) and beta (dan Owner, ann User).
    pub fn new() -> Self {
        let dir = temp_dir();
        let path = dir.path().join("tokens.db");
        let clock = ManualClock::new(START);
        let mut h = Harness {
            _dir: dir,
            path,
            clock,
            store: None,
            model: Model::new(START),
            refresh: Vec::new(),
            access: Vec::new(),
            garbage: Vec::new(),
            digest: String::new(),
            stats: RunStats::default(),
        };
        h.store = Some(h.open());
        h.garbage = garbage();
        for (org, user, role) in [
            (0, 0, Role::Owner),
            (0, 1, Role::Admin),
            (0, 2, Role::User),
            (1, 3, Role::Owner),
            (1, 0, Role::User),
        ] {
            h.step(&Op::AddMember { org, user, role })
                .expect("seeding members");
        }
        h
    }

    fn config(&self) -> Config {
        Config::new(&self.path)
            .key(StoreKey::from_bytes(KEY))
            .clock(self.clock.clone())
            .access_ttl(Duration::from_secs(ACCESS_TTL))
            .max_access_per_refresh(CAP)
            .max_live_tokens_per_member(LIVE_CAP)
            .retention(Duration::from_secs(RETENTION))
            .prefix(PREFIX)
    }

    fn open(&self) -> TokenStore {
        self.config().open().expect("opening the store")
    }

    fn store(&self) -> &TokenStore {
        self.store.as_ref().expect("store is open")
    }

    fn pick(list: &[(Id, String)], i: u8) -> Option<&(Id, String)> {
        if list.is_empty() {
            None
        } else {
            Some(&list[list.len() - 1 - (i as usize % list.len())])
        }
    }

    /// The token text a [`Tok`] stands for, given the kind the call expects,
    /// and the id the model should look up (`None`: the store must not find
    /// it, or the text is malformed).
    fn resolve(&self, t: Tok, want: TokenKind) -> (String, Option<Id>, bool) {
        let (mine, other) = match want {
            TokenKind::Refresh => (&self.refresh, &self.access),
            TokenKind::Access => (&self.access, &self.refresh),
        };
        let unknown = |i: u8| {
            let mut id = [0xA5; 16];
            id[0] = i;
            (encode_raw(PREFIX, want, id, [i; 32]), None, false)
        };
        match t {
            Tok::Own(i) => match Self::pick(mine, i) {
                Some((id, s)) => (s.clone(), Some(*id), false),
                None => unknown(i),
            },
            Tok::Other(i) => match Self::pick(other, i) {
                Some((_, s)) => (s.clone(), None, true),
                None => (
                    self.garbage[i as usize % self.garbage.len()].clone(),
                    None,
                    true,
                ),
            },
            Tok::WrongSecret(i) => match Self::pick(mine, i) {
                Some((id, s)) => {
                    let (_, mut secret) = decode_raw(PREFIX, want, s).expect("issued token parses");
                    secret[i as usize % 32] ^= 1 << (i % 8);
                    (encode_raw(PREFIX, want, *id, secret), None, false)
                }
                None => unknown(i),
            },
            Tok::Unknown(i) => unknown(i),
            Tok::Garbage(i) => (
                self.garbage[i as usize % self.garbage.len()].clone(),
                None,
                true,
            ),
        }
    }

    /// Expected answer of a token lookup that cannot find the token.
    fn missing(malformed: bool) -> &'static str {
        if malformed {
            "malformed"
        } else {
            "invalid_token"
        }
    }

    /// Runs one operation on the store and the model, compares the answers,
    /// then checks the whole store.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        self.stats.ops += 1;
        let failed = self.apply(op)?;
        if !failed {
            self.stats.ok += 1;
        }
        self.check(failed).map_err(|e| format!("after {op:?}: {e}"))
    }

    /// Applies `op`; returns whether the call failed (an error answer).
    fn apply(&mut self, op: &Op) -> Result<bool, String> {
        let now = self.model.now;
        match op {
            Op::AddMember { org, user, role } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let a = self.store().add_member(o, u, *role);
                let e = self.model.add_member(o, u, *role);
                same("add_member", &a, &e)?;
                Ok(a.is_err())
            }
            Op::SetRole { org, user, role } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let a = self.store().set_role(o, u, *role);
                let e = self.model.set_role(o, u, *role);
                same("set_role", &a, &e)?;
                Ok(a.is_err())
            }
            Op::Transfer { org, user } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let a = self.store().transfer_ownership(o, u);
                let e = self.model.transfer(o, u);
                same("transfer_ownership", &a, &e)?;
                Ok(a.is_err())
            }
            Op::RemoveMember { org, user } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let a = self.store().remove_member(o, u);
                let e = self.model.remove_member(o, u);
                same("remove_member", &a, &e)?;
                if let (Ok(x), Ok(y)) = (&a, &e) {
                    ensure!(x == y, "remove_member revoked {x}, model {y}");
                    self.stats.revocations += 1;
                }
                Ok(a.is_err())
            }
            Op::Generate { org, user, opts }
            | Op::Assign {
                org,
                actor: user,
                opts,
                ..
            } => {
                let to = match op {
                    Op::Assign { user, .. } => Some(user_name(*user)),
                    _ => None,
                };
                let (o, u) = (org_name(*org), user_name(*user));
                let actor = Actor::new(o, u);
                let mut g = GenerateOptions::default();
                if let Some(l) = opts.label {
                    g = g.label(l);
                }
                if let Some(s) = &opts.scopes {
                    g = g.scopes(s.iter().copied());
                }
                if let Some(e) = opts.expires_in {
                    g = g.expires_in(e);
                }
                let a = match to {
                    Some(to) => self.store().assign(&actor, to, g),
                    None => self.store().generate(&actor, g),
                };
                let e = self.model.issue(o, u, to, opts);
                same("generate/assign", &a, &e)?;
                if let (Ok(issued), Ok(rec)) = (a.as_ref(), e) {
                    let text = issued.token.expose().to_string();
                    ensure!(
                        !format!("{issued:?}").contains(&text),
                        "invariant 1: Debug of an issued token shows its secret"
                    );
                    ensure!(
                        inspect(PREFIX, &text).ok() == Some((TokenKind::Refresh, issued.info.id)),
                        "issued refresh token does not parse to its id"
                    );
                    let id = *issued.info.id.as_bytes();
                    ensure!(!self.model.refresh.contains_key(&id), "id reused");
                    self.model.refresh.insert(id, rec);
                    let want = self.model.info(&id);
                    ensure!(
                        issued.info == want,
                        "issued info {:?}, model {want:?}",
                        issued.info
                    );
                    self.refresh.push((id, text));
                }
                Ok(a.is_err())
            }
            Op::Exchange(t) => {
                let (text, id, malformed) = self.resolve(*t, TokenKind::Refresh);
                let a = self.store().exchange(&text);
                let e = match id {
                    Some(id) => self.model.exchange_check(&id),
                    None => Err(Self::missing(malformed)),
                };
                same("exchange", &a, &e)?;
                if let (Ok(g), Ok(expires_at), Some(rid)) = (a.as_ref(), e, id) {
                    let access = g.access_token.expose().to_string();
                    ensure!(
                        !format!("{g:?}").contains(&access) && !format!("{g:?}").contains(&text),
                        "invariant 1: Debug of a grant shows a secret"
                    );
                    ensure!(
                        g.expires_at == expires_at
                            && g.issued_at == now
                            && g.token_type == "Bearer"
                            && *g.refresh_id.as_bytes() == rid
                            && g.refresh_token.expose() == text,
                        "exchange grant differs from the model: {g:?}, expires_at {expires_at}"
                    );
                    ensure!(
                        inspect(PREFIX, &access).ok() == Some((TokenKind::Access, g.access_id)),
                        "access token does not parse to its id"
                    );
                    let aid = *g.access_id.as_bytes();
                    ensure!(!self.model.access.contains_key(&aid), "access id reused");
                    self.model.exchange_apply(&rid, aid, expires_at);
                    self.access.push((aid, access));
                    self.stats.exchanges += 1;
                }
                Ok(a.is_err())
            }
            Op::Verify(t) | Op::Authorize(t, _) => {
                let (text, id, malformed) = self.resolve(*t, TokenKind::Access);
                let e = match id {
                    Some(id) => self.model.verify(&id),
                    None => Err(Self::missing(malformed)),
                };
                let (a, e) = match op {
                    Op::Authorize(_, scope) => {
                        let e = e.and_then(|p| {
                            if p.scopes.iter().any(|s| s == scope) {
                                Ok(p)
                            } else {
                                Err("insufficient_scope")
                            }
                        });
                        (self.store().authorize(&text, scope), e)
                    }
                    _ => (self.store().verify(&text), e),
                };
                same("verify/authorize", &a, &e)?;
                if let (Ok(p), Ok(m)) = (&a, &e) {
                    ensure!(principal_m(p) == *m, "principal {p:?}, model {m:?}");
                }
                Ok(a.is_err())
            }
            Op::ListOwn { org, user } | Op::ListOrg { org, user } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let actor = Actor::new(o, u);
                let (a, e) = match op {
                    Op::ListOwn { .. } => {
                        (self.store().list_own(&actor), self.model.list_own(o, u))
                    }
                    _ => (self.store().list_org(&actor), self.model.list_org(o, u)),
                };
                same("list", &a, &e)?;
                if let (Ok(x), Ok(y)) = (&a, &e) {
                    ensure!(x == y, "list {x:?}, model {y:?}");
                    ensure!(
                        x.iter().all(|t| t.org == o),
                        "invariant 7: a list shows another org's token"
                    );
                }
                Ok(a.is_err())
            }
            Op::Revoke {
                org,
                user,
                tok,
                reason,
            } => {
                let (o, u) = (org_name(*org), user_name(*user));
                // Refresh ids only: resolve as a refresh token and use its id.
                let (_, id, _) = self.resolve(*tok, TokenKind::Refresh);
                let tid = match (tok, id) {
                    (_, Some(id)) => TokenId::from_bytes(id),
                    (Tok::Other(i), None) => match Self::pick(&self.access, *i) {
                        // An access token's id is no refresh token's id.
                        Some((aid, _)) => TokenId::from_bytes(*aid),
                        None => TokenId::from_bytes([0x5A; 16]),
                    },
                    _ => TokenId::from_bytes([0x5A; 16]),
                };
                let a = self.store().revoke(&Actor::new(o, u), &tid, *reason);
                let known = Some(*tid.as_bytes()).filter(|i| self.model.refresh.contains_key(i));
                let e = self.model.revoke(o, u, known.as_ref(), *reason);
                same("revoke", &a, &e)?;
                if a.is_ok() {
                    self.stats.revocations += 1;
                }
                Ok(a.is_err())
            }
            Op::RevokeAll {
                org,
                user,
                member,
                before,
            } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let m = member.map(user_name);
                let t = before.map(|b| match b {
                    Before::Ago(s) => now.saturating_sub(s),
                    Before::Ahead(s) => now + s,
                });
                let scope = match m {
                    Some(m) => RevokeScope::Member(m.into()),
                    None => RevokeScope::Org,
                };
                let a = self.store().revoke_all(&Actor::new(o, u), scope, t);
                let e = self.model.revoke_all(o, u, m, t);
                same("revoke_all", &a, &e)?;
                if let (Ok(x), Ok(y)) = (&a, &e) {
                    ensure!(x == y, "revoke_all revoked {x}, model {y}");
                    self.stats.revocations += 1;
                }
                Ok(a.is_err())
            }
            Op::RevokeAccess(t) => {
                let (text, id, malformed) = self.resolve(*t, TokenKind::Access);
                let a = self.store().revoke_access(&text);
                let e = match id {
                    Some(id) => self.model.revoke_access(&id),
                    None => Err(Self::missing(malformed)),
                };
                same("revoke_access", &a, &e)?;
                if a.is_ok() {
                    self.stats.revocations += 1;
                }
                Ok(a.is_err())
            }
            Op::Purge { limit } => {
                if *limit == 0 {
                    let a = self.store().purge_expired(0);
                    same::<_, ()>("purge_expired", &a, &Err("usage"))?;
                    return Ok(true);
                }
                let (mut acc, mut refr) = (0, 0);
                for round in 0.. {
                    ensure!(round < 10_000, "purge_expired never finishes");
                    let r = self
                        .store()
                        .purge_expired(*limit)
                        .map_err(|e| format!("purge_expired: {e}"))?;
                    acc += r.access_removed;
                    refr += r.refresh_removed;
                    if !r.more {
                        break;
                    }
                }
                let (ea, er) = self.model.purge();
                ensure!(
                    (acc, refr) == (ea, er),
                    "purge removed {acc} access / {refr} refresh, model {ea} / {er}"
                );
                Ok(false)
            }
            Op::Audit { org, user } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let a = self.store().audit(&Actor::new(o, u), 20);
                let e = self.model.audit(o, u);
                same("audit", &a, &e)?;
                if let Ok(events) = &a {
                    ensure!(events.len() <= 20, "audit returned more than asked");
                    ensure!(
                        events.iter().all(|ev| ev.org == o),
                        "invariant 7: audit shows another org's events"
                    );
                    ensure!(
                        events.windows(2).all(|w| w[0].seq > w[1].seq),
                        "audit events are not newest first"
                    );
                }
                Ok(a.is_err())
            }
            Op::Advance(s) => {
                self.clock.advance(*s);
                self.model.now += s;
                Ok(false)
            }
            Op::Flush => {
                self.store().flush().map_err(|e| format!("flush: {e}"))?;
                Ok(false)
            }
            Op::Reopen => {
                self.store = None;
                self.store = Some(self.open());
                self.model.reopened();
                self.stats.reopens += 1;
                Ok(false)
            }
        }
    }

    /// Checks the store as a whole against the model and DESIGN.md's
    /// invariants 2, 3, 4, 6 and 7. `failed`: the last call answered an
    /// error, so nothing may have changed (invariant 4).
    fn check(&mut self, failed: bool) -> Result<(), String> {
        let store = self.store();
        let m = &self.model;
        let mut digest = String::new();

        // Members, and every org's tokens as each member sees them.
        for org in ORGS {
            let members = store.members(org);
            ensure!(
                members == m.members_of(org),
                "members of {org}: {members:?}, model {:?}",
                m.members_of(org)
            );
            let _ = writeln!(digest, "{org}: {members:?}");
            for (user, role) in &members {
                let actor = Actor::new(org, user.as_str());
                let own = store
                    .list_own(&actor)
                    .map_err(|e| format!("list_own {org}/{user}: {e}"))?;
                let want = m.list(org, Some(user));
                ensure!(
                    own == want,
                    "list_own {org}/{user}: {own:?}, model {want:?}"
                );
                if *role == Role::Owner {
                    let all = store
                        .list_org(&actor)
                        .map_err(|e| format!("list_org {org}: {e}"))?;
                    let want = m.list(org, None);
                    ensure!(all == want, "list_org {org}: {all:?}, model {want:?}");
                    ensure!(
                        all.iter().all(|t| t.org == org),
                        "invariant 7: list_org of {org} shows another org's token"
                    );
                    let _ = writeln!(digest, "{all:?}");
                } else {
                    let _ = writeln!(digest, "{own:?}");
                }
            }
        }

        // Counts.
        let s = store.stats().map_err(|e| format!("stats: {e}"))?;
        let (mut active, mut revoked, mut expired) = (0, 0, 0);
        for r in m.refresh.values() {
            if m.is_revoked(r) {
                revoked += 1;
            } else if m.is_expired(r) {
                expired += 1;
            } else {
                active += 1;
            }
        }
        let orgs = ORGS.iter().filter(|o| !m.members_of(o).is_empty()).count() as u64;
        let want = (
            orgs,
            m.members.len() as u64,
            active,
            revoked,
            expired,
            m.access.len() as u64,
        );
        let got = (
            s.orgs,
            s.members,
            s.active,
            s.revoked,
            s.expired,
            s.access_tokens,
        );
        ensure!(
            got == want,
            "stats (orgs, members, active, revoked, expired, access) {got:?}, model {want:?}"
        );
        let _ = writeln!(digest, "{got:?}");

        // Invariants 2 and 3: every access token ever issued verifies exactly
        // as the model says (never after its family is revoked, never with a
        // scope outside the holder's current role, never once they left).
        for (id, text) in &self.access {
            let a = store.verify(text);
            let e = m.verify(id);
            same("invariant 2/3 sweep: verify", &a, &e)?;
            if let (Ok(p), Ok(want)) = (&a, &e) {
                let got = principal_m(p);
                ensure!(
                    got == *want,
                    "invariant 3: verify gave {got:?}, model {want:?}"
                );
                let allowed = policy(p.role);
                ensure!(
                    got.scopes.iter().all(|s| allowed.contains(&s.as_str())),
                    "invariant 3: scopes {:?} outside policy({:?})",
                    got.scopes,
                    p.role
                );
            }
            let _ = writeln!(digest, "{}", kind(&a));
        }
        // Invariant 2 for refresh tokens: a revoked (or purged) one never
        // exchanges. Only calls the model says must fail, so state is kept.
        for (id, text) in &self.refresh {
            let e = m.exchange_check(id);
            if e.is_err() {
                let a = store.exchange(text);
                same("invariant 2 sweep: exchange", &a, &e)?;
            }
        }

        // Invariant 6: storage is consistent.
        let report = store
            .check_integrity()
            .map_err(|e| format!("check_integrity: {e}"))?;
        ensure!(
            report.is_clean(),
            "invariant 6: integrity problems {:?}",
            report.problems
        );

        // Invariant 4: an error answer changed nothing observable.
        if failed {
            ensure!(
                digest == self.digest,
                "invariant 4: a failed call changed the store:\nbefore:\n{}\nafter:\n{digest}",
                self.digest
            );
        }
        self.digest = digest;
        Ok(())
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// Strings that are no token of this store, of either kind.
fn garbage() -> Vec<String> {
    let good = encode_raw(PREFIX, TokenKind::Refresh, [3; 16], [4; 32]);
    let mut bad_check = good.clone().into_bytes();
    let last = bad_check.len() - 1;
    bad_check[last] = if bad_check[last] == b'0' { b'1' } else { b'0' };
    let mut bad_char = good.clone().into_bytes();
    bad_char[10] = b'-';
    let mut accented = good.clone();
    accented.truncate(good.len() - 2);
    accented.push('é');
    vec![
        String::new(),
        "tvr_".into(),
        "tva_".into(),
        format!("{good} "),
        String::from_utf8(bad_check).expect("ascii"),
        String::from_utf8(bad_char).expect("ascii"),
        format!("sq{}", &good[2..]),
        format!("tvr_{}", "z".repeat(good.len() - 4)),
        accented,
        "Bearer tva_x".into(),
    ]
}

/// Runs `ops` on a fresh harness; the error names the failing step.
pub fn run_ops(ops: &[Op]) -> Result<RunStats, String> {
    let mut h = Harness::new();
    for (i, op) in ops.iter().enumerate() {
        h.step(op).map_err(|e| format!("step {i}: {e}"))?;
    }
    Ok(h.stats)
}
