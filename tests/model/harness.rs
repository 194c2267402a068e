//! The runner: applies each [`Op`] to a real store and to the [`Model`],
//! compares the answers, and after every step checks the store as a whole
//! against the model ([`Harness::check`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokenvault::token::{decode_raw, encode_raw, inspect};
use tokenvault::{
    Actor, ClientInfo, Config, GenerateOptions, ManualClock, Principal, RevokeScope, Role,
    StoreKey, TokenId, TokenKind, TokenStore,
};

use super::model::{
    policy, Id, MResult, Model, PrincipalM, ACCESS_TTL, CAP, LEEWAY, LIVE_CAP, RETENTION,
};
use super::ops::{org_name, user_name, Before, Op, Tok, CLIENTS, ORGS};

/// The clock's start.
pub const START: u64 = 1_700_000_000;
/// Token prefix.
pub const PREFIX: &str = "tv";

const KEY: [u8; 32] = [42; 32];

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
            .rotation_leeway(Duration::from_secs(LEEWAY))
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

    /// The refresh token id a [`Tok`] stands for in a call by id, and that
    /// id if the model holds it.
    fn refresh_id_of(&self, tok: Tok) -> (TokenId, Option<Id>) {
        let (_, id, _) = self.resolve(tok, TokenKind::Refresh);
        let tid = match (tok, id) {
            (_, Some(id)) => TokenId::from_bytes(id),
            (Tok::Other(i), None) => match Self::pick(&self.access, i) {
                // An access token's id is no refresh token's id.
                Some((aid, _)) => TokenId::from_bytes(*aid),
                None => TokenId::from_bytes([0x5A; 16]),
            },
            _ => TokenId::from_bytes([0x5A; 16]),
        };
        let known = Some(*tid.as_bytes()).filter(|i| self.model.refresh.contains_key(i));
        (tid, known)
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
            Op::Exchange(_) | Op::ExchangeScoped(..) | Op::ExchangeFrom(..) => {
                let (t, narrow, client) = match op {
                    Op::ExchangeScoped(t, scopes) => (t, Some(*scopes), None),
                    Op::Exchange(t) => (t, None, None),
                    Op::ExchangeFrom(t, c) => (t, None, Some(*c)),
                    _ => unreachable!(),
                };
                let (text, id, malformed) = self.resolve(*t, TokenKind::Refresh);
                let a = match (narrow, client) {
                    (Some(scopes), _) => self.store().exchange_with_scopes(&text, scopes),
                    (None, Some(c)) => {
                        let (ip, agent) = CLIENTS[c as usize];
                        let info = ClientInfo::new(ip.map(|ip| ip.parse().unwrap()), agent);
                        self.store().exchange_from::<&str>(&text, None, &info)
                    }
                    (None, None) => self.store().exchange(&text),
                };
                // A spent token past its leeway: its family is revoked (an
                // error answer that changes the store, on purpose).
                let reused = id.is_some_and(|id| self.model.reuse(&id));
                if reused {
                    self.stats.revocations += 1;
                }
                let e = match (id, narrow) {
                    (Some(id), Some(scopes)) => self.model.exchange_scoped_check(&id, scopes),
                    (Some(id), None) => self.model.exchange_check(&id),
                    (None, _) => Err(Self::missing(malformed)),
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
                    let narrow = narrow.map(|n| {
                        let mut n: Vec<String> = n.iter().map(|s| s.to_string()).collect();
                        n.sort();
                        n.dedup();
                        n
                    });
                    self.model
                        .exchange_apply_narrowed(&rid, aid, expires_at, narrow);
                    if let Some(c) = client {
                        self.model.exchange_client(&rid, c);
                    }
                    self.access.push((aid, access));
                    self.stats.exchanges += 1;
                }
                Ok(a.is_err() && !reused)
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
                let (tid, known) = self.refresh_id_of(*tok);
                let a = self.store().revoke(&Actor::new(o, u), &tid, *reason);
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
            Op::AssignPending {
                org,
                actor,
                user,
                opts,
            } => {
                let (o, u, to) = (org_name(*org), user_name(*actor), user_name(*user));
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
                let a = self.store().assign_pending(&Actor::new(o, u), to, g);
                let e = self.model.issue(o, u, Some(to), opts);
                same("assign_pending", &a, &e)?;
                if let (Ok(info), Ok(mut rec)) = (a.as_ref(), e) {
                    let id = *info.id.as_bytes();
                    ensure!(!self.model.refresh.contains_key(&id), "id reused");
                    Model::make_pending(&mut rec, now);
                    self.model.refresh.insert(id, rec);
                    let want = self.model.info(&id);
                    ensure!(*info == want, "pending info {info:?}, model {want:?}");
                    // No secret exists: a text with the right id and some
                    // secret, which never matches.
                    self.refresh
                        .push((id, encode_raw(PREFIX, TokenKind::Refresh, id, [0x77; 32])));
                }
                Ok(a.is_err())
            }
            Op::Claim { org, user, tok } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let (tid, known) = self.refresh_id_of(*tok);
                let a = self.store().claim(&Actor::new(o, u), &tid);
                let e = self.model.claim(o, u, known.as_ref());
                same("claim", &a, &e)?;
                if let (Ok(t), Ok(want)) = (a.as_ref(), e) {
                    ensure!(t.info == want, "claimed {:?}, model {want:?}", t.info);
                    let id = *tid.as_bytes();
                    let text = t.token.expose().to_string();
                    for entry in self.refresh.iter_mut().filter(|(i, _)| *i == id) {
                        entry.1 = text.clone();
                    }
                }
                Ok(a.is_err())
            }
            Op::Suspend {
                org,
                user,
                tok,
                disable,
            } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let (tid, known) = self.refresh_id_of(*tok);
                let actor = Actor::new(o, u);
                let a = if *disable {
                    self.store().disable(&actor, &tid)
                } else {
                    self.store().enable(&actor, &tid)
                };
                let e = self.model.suspend(o, u, known.as_ref(), *disable);
                same("disable/enable", &a, &e)?;
                if let (Ok(x), Ok(y)) = (&a, &e) {
                    ensure!(x == y, "disable/enable answered {x:?}, model {y:?}");
                }
                Ok(a.is_err())
            }
            Op::Rotate {
                org,
                user,
                tok,
                grace,
            } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let (tid, known) = self.refresh_id_of(*tok);
                let a = self.store().rotate(&Actor::new(o, u), &tid, *grace);
                let e = self.model.rotate_check(o, u, known.as_ref(), *grace);
                same("rotate", &a, &e)?;
                if let (Ok(r), Ok((rec, dies_at))) = (a.as_ref(), e) {
                    let text = r.issued.token.expose().to_string();
                    ensure!(
                        !format!("{r:?}").contains(&text),
                        "invariant 1: Debug of a rotation shows its secret"
                    );
                    ensure!(
                        r.replaces == tid && r.old_expires_at == dies_at,
                        "rotation {r:?}, model dies at {dies_at}"
                    );
                    let id = *r.issued.info.id.as_bytes();
                    ensure!(!self.model.refresh.contains_key(&id), "id reused");
                    self.model.rotate_apply(tid.as_bytes(), id, rec, dies_at);
                    let want = self.model.info(&id);
                    ensure!(
                        r.issued.info == want,
                        "rotated info {:?}, model {want:?}",
                        r.issued.info
                    );
                    self.refresh.push((id, text));
                }
                Ok(a.is_err())
            }
            Op::SetPolicy {
                org,
                user,
                max_lifetime,
                unused_expiry,
                rotate_on_use,
            } => {
                let (o, u) = (org_name(*org), user_name(*user));
                let p = tokenvault::OrgPolicy::default()
                    .max_lifetime(*max_lifetime)
                    .unused_expiry(*unused_expiry)
                    .rotate_on_use(*rotate_on_use);
                let a = self.store().set_org_policy(&Actor::new(o, u), p);
                let e = self
                    .model
                    .set_policy(o, u, *max_lifetime, *unused_expiry, *rotate_on_use);
                same("set_org_policy", &a, &e)?;
                if let Ok(got) = &a {
                    ensure!(*got == p, "set_org_policy answered {got:?}, asked {p:?}");
                }
                Ok(a.is_err())
            }
            Op::OAuthRefresh(t, scopes) => {
                let (text, id, malformed) = self.resolve(*t, TokenKind::Refresh);
                let a = self.store().oauth_refresh(&text, scopes);
                // A reuse revokes the family: an error answer that changes
                // the store, on purpose.
                let reused = id.is_some_and(|id| self.model.reuse(&id));
                if reused {
                    self.stats.revocations += 1;
                }
                let e = match id {
                    Some(id) => self.model.oauth_check(&id, scopes),
                    None => Err(Self::missing(malformed)),
                };
                same("oauth_refresh", &a, &e)?;
                let (Ok(g), Ok(plan), Some(rid)) = (a.as_ref(), e, id) else {
                    return Ok(a.is_err() && !reused);
                };
                ensure!(
                    !format!("{g:?}").contains(&text)
                        && !format!("{g:?}").contains(g.access.access_token.expose()),
                    "invariant 1: Debug of an OAuth grant shows a secret"
                );
                // The refresh token the access token belongs to.
                let holder = match (plan, &g.refresh_token) {
                    (None, None) => rid,
                    (Some((rec, dies_at)), Some(new)) => {
                        let new_id = *g.access.refresh_id.as_bytes();
                        ensure!(
                            inspect(PREFIX, new.expose()).ok()
                                == Some((TokenKind::Refresh, g.access.refresh_id)),
                            "the new refresh token does not parse to its id"
                        );
                        ensure!(!self.model.refresh.contains_key(&new_id), "id reused");
                        self.model.spend_apply(&rid, new_id, rec, dies_at);
                        self.refresh.push((new_id, new.expose().to_string()));
                        new_id
                    }
                    (plan, got) => {
                        return Err(format!(
                            "oauth_refresh rotated: {}, model expected rotation: {}",
                            got.is_some(),
                            plan.is_some()
                        ))
                    }
                };
                let narrow: Option<Vec<String>> = (!scopes.is_empty()).then(|| {
                    let mut n: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
                    n.sort();
                    n.dedup();
                    n
                });
                let expires_at = self
                    .model
                    .exchange_check(&holder)
                    .map_err(|k| format!("the model cannot exchange the refreshed token: {k}"))?;
                ensure!(
                    g.access.expires_at == expires_at
                        && g.access.issued_at == now
                        && *g.access.refresh_id.as_bytes() == holder,
                    "oauth grant differs from the model: {g:?}, expires_at {expires_at}"
                );
                let aid = *g.access.access_id.as_bytes();
                ensure!(!self.model.access.contains_key(&aid), "access id reused");
                self.model
                    .exchange_apply_narrowed(&holder, aid, expires_at, narrow);
                self.access
                    .push((aid, g.access.access_token.expose().to_string()));
                self.stats.exchanges += 1;
                Ok(false)
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
            if e.is_err() && m.would_reuse(id) {
                // Trading a spent token past its leeway is a reuse, which
                // revokes its family (the operations check that): here its
                // refusal is checked without trading it.
                let a = store.verify_refresh(text);
                same("invariant 2 sweep: verify_refresh", &a, &e)?;
            } else if e.is_err() {
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
