//! Crash test (DESIGN.md invariants 2, 5 and 6): a child process
//! (this test binary run again with `TOKENVAULT_CRASH_CHILD=<dir>`) performs
//! random calls on a store, and the parent kills it with SIGKILL at a random
//! moment, reopens the store and checks that every acknowledged revocation
//! still holds (the refresh token does not exchange, its access tokens do not
//! verify), every acknowledged generate/assign is present, acknowledged role
//! changes and removals hold, `check_integrity()` is clean and nothing
//! panics. Then the next child carries on with the same store.
//!
//! What the child writes, all in the test's temporary directory:
//! - `acks.log`: before each mutating call a `try …` line, after it returned
//!   `ok …`, both synced (`sync_data`) before going on. Only token ids, never
//!   a secret. The last `try` without its `ok` is the call in flight when
//!   the child died: it may or may not have happened.
//! - `secrets.log`: the token texts the child received, written and synced
//!   after the call returned and before its `ok` line. Secrets must never
//!   reach the store's disk or logs (invariant 1); this file is the test's
//!   own data, as a client's credential file would be, and lets the parent
//!   (which never sees the child's memory) present the revoked tokens after
//!   the restart.
//!
//! The child sometimes closes the store and opens it again, and the parent
//! closes it after its checks, so that kills also land during `close` (while
//! it writes the warm-start files the next open reads) and after opens that
//! read such files.
//!
//! At least 50 cycles in CI; `TOKENVAULT_CRASH_CYCLES` raises it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::child::{this_test, Rng};
use tokenvault::{Actor, ClientInfo, GenerateOptions, RevokeScope, Role, TokenState, TokenStore};

/// The clients the child names in half of its exchanges.
const CLIENTS: [(&str, &str); 2] = [("192.0.2.1", "crash-bot/1"), ("2001:db8::7", "cron/9")];

const CHILD_ENV: &str = "TOKENVAULT_CRASH_CHILD";
const SEED_ENV: &str = "TOKENVAULT_CRASH_SEED";
const DEFAULT_CYCLES: u64 = 50;
/// The organizations, their Owners (never changed here) and other members.
const MEMBERS: [(&str, &str, Role); 6] = [
    ("acme", "o", Role::Owner),
    ("acme", "a1", Role::Admin),
    ("acme", "u1", Role::User),
    ("acme", "u2", Role::User),
    ("beta", "p", Role::Owner),
    ("beta", "u1", Role::User),
];

fn owner(org: &str) -> &'static str {
    if org == "acme" {
        "o"
    } else {
        "p"
    }
}

fn open(dir: &Path) -> TokenStore {
    // Children issue tokens to a few members for hundreds of cycles.
    common::store::keyed(dir.join("store"), 7)
        .max_live_tokens_per_member(usize::MAX)
        .open()
        .expect("opening the store")
}

/// Complete lines of a log; a torn last line (the child died writing it) is
/// cut off the file so the next child starts on a fresh line.
fn read_lines(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        let f = OpenOptions::new().write(true).open(path).expect("log");
        f.set_len(complete as u64).expect("truncate torn line");
    }
    text[..complete].lines().map(str::to_string).collect()
}

struct Log(File);

impl Log {
    fn open(path: &Path) -> Log {
        Log(OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log"))
    }
    fn line(&mut self, s: &str) {
        self.0
            .write_all(format!("{s}\n").as_bytes())
            .expect("write log");
        self.0.sync_data().expect("sync log");
    }
}

// ------------------------------------------------------------------- child

struct Known {
    /// Refresh tokens: id, org, user, text.
    refresh: Vec<(String, String, String, String)>,
    /// Access tokens: id, refresh id, text.
    access: Vec<(String, String, String)>,
}

fn load_known(dir: &Path) -> Known {
    let mut k = Known {
        refresh: Vec::new(),
        access: Vec::new(),
    };
    for l in read_lines(&dir.join("secrets.log")) {
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["r", id, org, user, text] => k.refresh.push((
                id.to_string(),
                org.to_string(),
                user.to_string(),
                text.to_string(),
            )),
            ["a", id, rid, text] => {
                k.access
                    .push((id.to_string(), rid.to_string(), text.to_string()))
            }
            _ => panic!("bad secrets line {l:?}"),
        }
    }
    k
}

/// Runs random calls until killed (or, should the parent vanish, for 30 s).
fn child(dir: &Path) {
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng(seed | 1);
    let mut store = open(dir);
    let mut acks = Log::open(&dir.join("acks.log"));
    let mut secrets = Log::open(&dir.join("secrets.log"));
    let mut known = load_known(dir);
    for (org, user, role) in MEMBERS {
        if store.member_role(org, user).is_none() {
            let what = format!("add {org} {user} {role}");
            acks.line(&format!("try {what}"));
            store
                .add_member(org, user, role)
                .expect("re-adding a member");
            acks.line(&format!("ok {what}"));
        }
    }
    // Most children start with rotation on use on in acme (later policy
    // calls change it), so that refreshes rotate from the first cycle.
    if rng.below(4) != 0 {
        let what = "policy acme none none true";
        acks.line(&format!("try {what}"));
        let p = tokenvault::OrgPolicy::default().rotate_on_use(true);
        if store.set_org_policy(&Actor::new("acme", "o"), p).is_ok() {
            acks.line(&format!("ok {what}"));
        }
    }
    // Tokens this child assigned pending, to claim.
    let mut pending: Vec<(tokenvault::TokenId, &str, &str)> = Vec::new();
    // Tokens spent by an acknowledged refresh that rotated them (id,
    // text), this child's and earlier ones', to present again.
    let mut spent: Vec<(String, String)> = read_lines(&dir.join("acks.log"))
        .iter()
        .filter_map(|l| match l.split(' ').collect::<Vec<_>>().as_slice() {
            ["ok", "refresh", old, new] if *new != "-" => known
                .refresh
                .iter()
                .find(|r| r.0 == *old)
                .map(|r| (r.0.clone(), r.3.clone())),
            _ => None,
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let (org, user, _) = MEMBERS[rng.below(MEMBERS.len())];
        let actor = Actor::new(org, user);
        match rng.below(112) {
            0..=19 => {
                let what = format!("gen {org} {user}");
                acks.line(&format!("try {what}"));
                if let Ok(t) = store.generate(&actor, GenerateOptions::default()) {
                    let id = t.info.id.to_string();
                    secrets.line(&format!("r {id} {org} {user} {}", t.token.expose()));
                    acks.line(&format!("ok {what} {id}"));
                    known
                        .refresh
                        .push((id, org.into(), user.into(), t.token.expose().into()));
                }
            }
            20..=29 => {
                let (_, to, _) = MEMBERS[rng.below(MEMBERS.len())];
                let what = format!("assign {org} {to}");
                acks.line(&format!("try {what}"));
                let o = Actor::new(org, owner(org));
                if rng.below(3) == 0 {
                    // Pending: no secret until `to` claims it (below).
                    let what = format!("pend {org} {to}");
                    acks.line(&format!("try {what}"));
                    if let Ok(i) = store.assign_pending(&o, to, GenerateOptions::default()) {
                        acks.line(&format!("ok {what} {}", i.id));
                        pending.push((i.id, org, to));
                    }
                } else if let Ok(t) = store.assign(&o, to, GenerateOptions::default()) {
                    let id = t.info.id.to_string();
                    secrets.line(&format!("r {id} {org} {to} {}", t.token.expose()));
                    acks.line(&format!("ok {what} {id}"));
                    known
                        .refresh
                        .push((id, org.into(), to.into(), t.token.expose().into()));
                }
            }
            30..=54 if !known.refresh.is_empty() => {
                let (rid, _, _, text) = &known.refresh[rng.below(known.refresh.len())];
                // A spent token is presented by the reuse below only (an
                // exchange of it would be a reuse too, unacknowledged).
                if spent.iter().any(|(id, _)| id == rid) {
                    continue;
                }
                // Exchange is lazily durable: no try/ok, only the secret.
                // Half name one of the known clients (its last use is
                // written in the exchange's batch when it changes).
                let client = CLIENTS.get(rng.below(CLIENTS.len() * 2));
                let done = match client {
                    Some((ip, agent)) => {
                        let c = ClientInfo::new(Some(ip.parse().unwrap()), Some(agent));
                        store.exchange_from::<&str>(text, None, &c)
                    }
                    None => store.exchange(text),
                };
                if let Ok(g) = done {
                    let aid = g.access_id.to_string();
                    secrets.line(&format!("a {aid} {rid} {}", g.access_token.expose()));
                    known
                        .access
                        .push((aid, rid.clone(), g.access_token.expose().into()));
                }
            }
            55..=64 if !known.refresh.is_empty() => {
                let (id, org, holder, _) = known.refresh[rng.below(known.refresh.len())].clone();
                let by = if rng.below(2) == 0 {
                    holder
                } else {
                    owner(&org).to_string()
                };
                let what = format!("revoke {id}");
                acks.line(&format!("try {what}"));
                let tid: tokenvault::TokenId = id.parse().expect("token id");
                if store
                    .revoke(&Actor::new(org, by), &tid, Some("crash test"))
                    .is_ok()
                {
                    acks.line(&format!("ok {what}"));
                }
            }
            65..=69 => {
                let what = format!("revoke_member {org} {user}");
                acks.line(&format!("try {what}"));
                let o = Actor::new(org, owner(org));
                if store
                    .revoke_all(&o, RevokeScope::Member(user.into()), None)
                    .is_ok()
                {
                    acks.line(&format!("ok {what}"));
                }
            }
            70..=79 if !known.access.is_empty() => {
                let (aid, _, text) = known.access[rng.below(known.access.len())].clone();
                let what = format!("revoke_access {aid}");
                acks.line(&format!("try {what}"));
                if store.revoke_access(&text).is_ok() {
                    acks.line(&format!("ok {what}"));
                }
            }
            80..=87 if user != owner(org) => {
                let role = [Role::Stakeholder, Role::User, Role::Admin][rng.below(3)];
                let what = format!("role {org} {user} {role}");
                acks.line(&format!("try {what}"));
                if store.set_role(org, user, role).is_ok() {
                    acks.line(&format!("ok {what}"));
                }
            }
            88..=91 if user != owner(org) => {
                let what = format!("remove {org} {user}");
                acks.line(&format!("try {what}"));
                if store.remove_member(org, user).is_ok() {
                    acks.line(&format!("ok {what}"));
                    let role = MEMBERS
                        .iter()
                        .find(|m| m.0 == org && m.1 == user)
                        .expect("member")
                        .2;
                    let what = format!("add {org} {user} {role}");
                    acks.line(&format!("try {what}"));
                    store
                        .add_member(org, user, role)
                        .expect("re-adding a member");
                    acks.line(&format!("ok {what}"));
                }
            }
            // Suspension: holder or Owner, either way.
            93..=95 if !known.refresh.is_empty() => {
                // A recent token: older ones are mostly revoked by now.
                let n = known.refresh.len();
                let (id, org, holder, _) = known.refresh[n - 1 - rng.below(n.min(4))].clone();
                let by = if rng.below(2) == 0 {
                    holder
                } else {
                    owner(&org).to_string()
                };
                let tid: tokenvault::TokenId = id.parse().expect("token id");
                let disable = rng.below(3) != 0;
                let verb = if disable { "disable" } else { "enable" };
                let what = format!("{verb} {id}");
                acks.line(&format!("try {what}"));
                let actor = Actor::new(org, by);
                let done = if disable {
                    store.disable(&actor, &tid)
                } else {
                    store.enable(&actor, &tid)
                };
                if done.is_ok() {
                    acks.line(&format!("ok {what}"));
                }
            }
            // Rotation: the successor's secret is logged before its `ok`,
            // as an issue's.
            96..=97 if !known.refresh.is_empty() => {
                let n = known.refresh.len();
                let (id, org, holder, _) = known.refresh[n - 1 - rng.below(n.min(4))].clone();
                let tid: tokenvault::TokenId = id.parse().expect("token id");
                let grace = [0u64, 3_600][rng.below(2)];
                let what = format!("rotate {id}");
                acks.line(&format!("try {what}"));
                if let Ok(r) = store.rotate(&Actor::new(&org, &holder), &tid, grace) {
                    let new = r.issued.info.id.to_string();
                    let text = r.issued.token.expose();
                    secrets.line(&format!("r {new} {org} {holder} {text}"));
                    acks.line(&format!("ok {what} {new} {}", r.old_expires_at));
                    known.refresh.push((new, org, holder, text.into()));
                }
            }
            // An OAuth refresh (rotating under the organization's policy):
            // the successor's secret is logged before its `ok`, as an
            // issue's. Or a spent token presented again: a reuse, which
            // revokes its family before the call answers `revoked`.
            100..=111 if !known.refresh.is_empty() => {
                let n = known.refresh.len();
                let (id, org, holder, text) = known.refresh[n - 1 - rng.below(n.min(4))].clone();
                if let Some(old) = spent.get(rng.below(spent.len().max(1))).cloned() {
                    // Only a spent token that is not revoked (its family
                    // by an earlier reuse, say) is a reuse when presented.
                    let expired = matches!(
                        store.verify_refresh(&old.1),
                        Err(tokenvault::Error::Expired)
                    );
                    if expired && rng.below(2) == 0 {
                        let what = format!("reuse {}", old.0);
                        acks.line(&format!("try {what}"));
                        if let Err(tokenvault::Error::Revoked) =
                            store.oauth_refresh(&old.1, &[] as &[&str])
                        {
                            acks.line(&format!("ok {what}"));
                        }
                        continue;
                    }
                }
                let what = format!("refresh {id}");
                acks.line(&format!("try {what}"));
                if let Ok(g) = store.oauth_refresh(&text, &[] as &[&str]) {
                    match g.refresh_token {
                        Some(new_text) => {
                            let new = g.access.refresh_id.to_string();
                            let t = new_text.expose();
                            secrets.line(&format!("r {new} {org} {holder} {t}"));
                            acks.line(&format!("ok {what} {new}"));
                            known.refresh.push((new, org, holder, t.into()));
                            spent.push((id, text));
                        }
                        None => acks.line(&format!("ok {what} -")),
                    }
                }
            }
            // The member claims a token assigned to them pending: its secret
            // is logged before its `ok`, as an issue's.
            99 if !pending.is_empty() => {
                let (id, org, to) = pending.swap_remove(rng.below(pending.len()));
                let what = format!("claim {id}");
                acks.line(&format!("try {what}"));
                if let Ok(t) = store.claim(&Actor::new(org, to), &id) {
                    let text = t.token.expose();
                    secrets.line(&format!("r {id} {org} {to} {text}"));
                    acks.line(&format!("ok {what}"));
                    known
                        .refresh
                        .push((id.to_string(), org.into(), to.into(), text.into()));
                }
            }
            // An organization's policy, with limits far beyond the test's
            // run so that they stop nothing.
            98 => {
                let mut pick = |n: u64| (rng.below(2) == 0).then_some(n * 365 * 86_400);
                let (max, unused) = (pick(10), pick(5));
                // Rotation on use, mostly on, so that refreshes rotate.
                let rotate = rng.below(4) != 0;
                let text = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |s| s.to_string());
                let what = format!("policy {org} {} {} {rotate}", text(max), text(unused));
                acks.line(&format!("try {what}"));
                let p = tokenvault::OrgPolicy::default()
                    .max_lifetime(max)
                    .unused_expiry(unused)
                    .rotate_on_use(rotate);
                if store
                    .set_org_policy(&Actor::new(org, owner(org)), p)
                    .is_ok()
                {
                    acks.line(&format!("ok {what}"));
                }
            }
            // Closed and opened again: the kill may come while `close`
            // writes its warm-start files, or after the open that read
            // them, in the middle of later writes.
            92 => {
                store.close().expect("closing the store");
                store = open(dir);
            }
            _ if !known.access.is_empty() => {
                let (_, _, text) = &known.access[rng.below(known.access.len())];
                let _ = store.verify(text);
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------ parent

#[derive(Default)]
struct Expect {
    /// Acknowledged refresh tokens: id → (org, user).
    tokens: BTreeMap<String, (String, String)>,
    /// Refresh ids whose revocation was acknowledged.
    revoked: HashSet<String>,
    /// Access ids whose revocation was acknowledged.
    revoked_access: HashSet<String>,
    /// The last acknowledged suspension (`true`) or enable of a token.
    disabled: HashMap<String, bool>,
    /// Acknowledged rotations: old id → when it dies.
    rotated: HashMap<String, u64>,
    /// Tokens assigned pending (acknowledged), and those claimed since.
    unclaimed: HashSet<String>,
    claimed: HashSet<String>,
    /// The last acknowledged policy of each organization: maximum
    /// lifetime, unused expiry, rotation on use.
    policies: HashMap<String, (Option<u64>, Option<u64>, bool)>,
    /// Tokens spent by an acknowledged refresh that rotated them.
    spent: HashSet<String>,
    /// The original of each acknowledged token's rotation-on-use family
    /// (a token absent here is its own).
    family: HashMap<String, String>,
    /// Acknowledged reuses (each revoked its family).
    reused: usize,
    /// Last acknowledged role of each member (`None`: removed).
    roles: HashMap<(String, String), Option<Role>>,
    /// The call in flight at the kill, if any.
    pending: Option<String>,
    /// Pending tokens whose claim an earlier kill left unacknowledged.
    maybe_claimed: HashSet<String>,
    acked: usize,
}

fn expectations(lines: &[String]) -> Expect {
    let mut e = Expect::default();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["try", rest @ ..] => {
                // A call an earlier kill left unacknowledged may or may not
                // have committed: the role it would set is not known.
                if let Some(prev) = e.pending.take() {
                    let p: Vec<&str> = prev.split(' ').collect();
                    match p.as_slice() {
                        ["role" | "remove" | "add", org, user, ..] => {
                            e.roles.remove(&(org.to_string(), user.to_string()));
                        }
                        // Likewise a suspension or a policy.
                        ["disable" | "enable", id] => {
                            e.disabled.remove(*id);
                        }
                        ["policy", org, ..] => {
                            e.policies.remove(*org);
                        }
                        // Likewise a claim: the token may be claimed or
                        // still pending.
                        ["claim", id] => {
                            e.maybe_claimed.insert(id.to_string());
                        }
                        _ => {}
                    }
                }
                e.pending = Some(rest.join(" "));
            }
            ["ok", rest @ ..] => {
                e.pending = None;
                e.acked += 1;
                match rest {
                    ["gen" | "assign", org, user, id] => {
                        e.tokens
                            .insert(id.to_string(), (org.to_string(), user.to_string()));
                    }
                    ["revoke", id] => {
                        e.revoked.insert(id.to_string());
                    }
                    ["revoke_member" | "remove", org, user] => {
                        for (id, (o, u)) in &e.tokens {
                            if o == org && u == user {
                                e.revoked.insert(id.clone());
                            }
                        }
                        if rest[0] == "remove" {
                            e.roles.insert((org.to_string(), user.to_string()), None);
                        }
                    }
                    ["revoke_access", id] => {
                        e.revoked_access.insert(id.to_string());
                    }
                    ["pend", org, user, id] => {
                        e.tokens
                            .insert(id.to_string(), (org.to_string(), user.to_string()));
                        e.unclaimed.insert(id.to_string());
                    }
                    ["claim", id] => {
                        e.claimed.insert(id.to_string());
                    }
                    ["policy", org, max, unused, rotate] => {
                        let secs = |s: &str| s.parse::<u64>().ok();
                        let rotate = rotate.parse().expect("rotate_on_use");
                        e.policies
                            .insert(org.to_string(), (secs(max), secs(unused), rotate));
                    }
                    ["refresh", _, "-"] => {}
                    ["refresh", old, new] => {
                        // As for a rotation: the successor is expected
                        // where its predecessor is.
                        if let Some((org, user)) = e.tokens.get(*old).cloned() {
                            e.tokens.insert(new.to_string(), (org, user));
                        }
                        let root = e.family.get(*old).cloned().unwrap_or(old.to_string());
                        e.family.insert(new.to_string(), root);
                        e.spent.insert(old.to_string());
                    }
                    ["reuse", id] => {
                        e.reused += 1;
                        let root = e.family.get(*id).cloned().unwrap_or(id.to_string());
                        for t in e.tokens.keys() {
                            if *t == root || e.family.get(t) == Some(&root) {
                                e.revoked.insert(t.clone());
                            }
                        }
                    }
                    ["disable", id] => {
                        e.disabled.insert(id.to_string(), true);
                    }
                    ["enable", id] => {
                        e.disabled.insert(id.to_string(), false);
                    }
                    ["rotate", old, new, dies_at] => {
                        // The old token may be one whose issue the child
                        // saw but could not acknowledge before a kill: its
                        // successor is then not expected by holder either.
                        if let Some((org, user)) = e.tokens.get(*old).cloned() {
                            e.tokens.insert(new.to_string(), (org, user));
                        }
                        e.rotated
                            .insert(old.to_string(), dies_at.parse().expect("dies_at"));
                    }
                    ["add" | "role", org, user, role] => {
                        let role: Role = role.parse().expect("role");
                        e.roles
                            .insert((org.to_string(), user.to_string()), Some(role));
                    }
                    _ => panic!("bad ack line {l:?}"),
                }
            }
            _ => panic!("bad ack line {l:?}"),
        }
    }
    e
}

/// Reopens the store after a kill and checks everything acknowledged.
/// Checks the store the killed child left, closes it, and checks it again
/// as the next open finds it (from the warm-start files that close wrote);
/// closes it again for the next child.
fn check_after_crash(dir: &Path, cycle: u64) -> usize {
    let store = open(dir);
    let acked = check(&store, dir, cycle);
    store.close().expect("closing the store after the check");
    let store = open(dir);
    assert!(
        store.stats().expect("stats").warm_start,
        "cycle {cycle}: the open after a close read no warm-start files"
    );
    assert_eq!(check(&store, dir, cycle), acked);
    // The next child opens what this close leaves.
    store.close().expect("closing the store after the check");
    acked
}

fn check(store: &TokenStore, dir: &Path, cycle: u64) -> usize {
    let report = store.check_integrity().expect("check_integrity");
    assert!(
        report.is_clean(),
        "cycle {cycle}: invariant 6: {:?}",
        report.problems
    );

    let e = expectations(&read_lines(&dir.join("acks.log")));
    let known = load_known(dir);
    let texts: HashMap<&str, &str> = known
        .refresh
        .iter()
        .map(|(id, _, _, t)| (id.as_str(), t.as_str()))
        .collect();
    let mut listed = HashMap::new();
    for org in ["acme", "beta"] {
        // A child killed while it was still adding the members: the Owner
        // comes first, so without it the organization has nothing yet.
        if store.member_role(org, owner(org)).is_none() {
            continue;
        }
        for t in store
            .list_org(&Actor::new(org, owner(org)))
            .expect("list_org")
        {
            listed.insert(t.id.to_string(), t);
        }
    }
    let pending = e.pending.as_deref().unwrap_or("");
    // A token's last use names one of the clients the child used, or none:
    // never a mix of two, never garbage.
    for (id, t) in &listed {
        let shown = (
            t.last_used_ip.map(|ip| ip.to_string()),
            t.last_used_agent.clone(),
        );
        assert!(
            shown == (None, None)
                || CLIENTS
                    .iter()
                    .any(|(ip, a)| shown == (Some(ip.to_string()), Some(a.to_string()))),
            "cycle {cycle}: token {id} shows a client never used: {shown:?}"
        );
    }

    // Every acknowledged generate/assign is present, with its holder.
    for (id, (org, user)) in &e.tokens {
        let t = listed
            .get(id)
            .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged token {id} is gone"));
        assert_eq!((&t.org, &t.user), (org, user), "cycle {cycle}: token {id}");
    }
    // Invariant 2: every acknowledged revocation holds after the crash.
    for id in &e.revoked {
        let t = &listed[id];
        assert_eq!(
            t.state.as_str(),
            "revoked",
            "cycle {cycle}: invariant 2: revoked token {id} listed as {:?}",
            t.state
        );
        // A token assigned pending and never claimed has no secret.
        let Some(text) = texts.get(id.as_str()) else {
            continue;
        };
        let r = store.exchange(text);
        assert_eq!(
            r.as_ref().err().map(|e| e.kind()),
            Some("revoked"),
            "cycle {cycle}: invariant 2: revoked token {id} exchanged: {r:?}"
        );
    }
    // Acknowledged suspensions hold (unless the call in flight touched the
    // same token); a revocation or a rotation's end is said before them.
    for (id, disabled) in &e.disabled {
        if pending.ends_with(id.as_str()) {
            continue;
        }
        let t = &listed[id];
        let gone = matches!(t.state.as_str(), "revoked" | "expired");
        // A spent token is not traded here: that would be a reuse.
        let r = if e.spent.contains(id) {
            store.verify_refresh(texts[id.as_str()]).map(|_| ())
        } else {
            store.exchange(texts[id.as_str()]).map(|_| ())
        };
        if *disabled && !gone {
            assert_eq!(
                (t.state.as_str(), r.as_ref().err().map(|e| e.kind())),
                ("disabled", Some("disabled")),
                "cycle {cycle}: acknowledged suspension of {id} lost: {r:?}"
            );
        } else {
            assert_ne!(
                t.state.as_str(),
                "disabled",
                "cycle {cycle}: acknowledged enable of {id} lost"
            );
        }
    }
    // An acknowledged pending assignment stays pending until an
    // acknowledged claim (or a revocation); a claim holds.
    for id in &e.unclaimed {
        let state = listed[id].state.as_str();
        if e.claimed.contains(id) {
            assert_ne!(
                state, "pending",
                "cycle {cycle}: acknowledged claim of {id} lost"
            );
        } else if !pending.ends_with(id.as_str()) && !e.maybe_claimed.contains(id) {
            assert!(
                state == "pending" || state == "revoked",
                "cycle {cycle}: pending token {id} listed as {state}"
            );
        }
    }
    // Acknowledged policies hold (unless the call in flight set one).
    for (org, (max, unused, rotate)) in &e.policies {
        if pending.starts_with(&format!("policy {org} ")) {
            continue;
        }
        let p = store
            .org_policy(&Actor::new(org, owner(org)))
            .expect("org_policy");
        assert_eq!(
            (p.max_lifetime, p.unused_expiry, p.rotate_on_use),
            (*max, *unused, *rotate),
            "cycle {cycle}: acknowledged policy of {org} lost"
        );
    }
    // A token spent by an acknowledged refresh stays spent: it neither
    // verifies (checked without trading it, which would be a reuse) nor
    // is rotated again by hand.
    for id in &e.spent {
        let t = &listed[id];
        assert!(
            matches!(t.state.as_str(), "expired" | "revoked"),
            "cycle {cycle}: spent token {id} listed as {:?}",
            t.state
        );
        let r = store.verify_refresh(texts[id.as_str()]);
        let kind = r.as_ref().err().map(|e| e.kind());
        assert!(
            kind == Some("expired") || kind == Some("revoked"),
            "cycle {cycle}: spent token {id} still verifies: {r:?}"
        );
        let again = store.rotate(&Actor::new(&t.org, owner(&t.org)), &t.id, 0);
        let kind = again.as_ref().err().map(|e| e.kind());
        assert!(
            kind == Some("conflict") || kind == Some("revoked"),
            "cycle {cycle}: spent token {id} rotated: {again:?}"
        );
    }
    // Acknowledged rotations hold: the old token dies when it was said to,
    // and it cannot be rotated again.
    for (id, dies_at) in &e.rotated {
        let t = &listed[id];
        assert_eq!(
            t.expires_at,
            Some(*dies_at),
            "cycle {cycle}: acknowledged rotation of {id} lost"
        );
        let owner = Actor::new(&t.org, owner(&t.org));
        let again = store.rotate(&owner, &t.id, 0);
        let kind = again.as_ref().err().map(|e| e.kind());
        assert!(
            kind == Some("conflict") || kind == Some("revoked"),
            "cycle {cycle}: rotated token {id} rotated again: {again:?}"
        );
    }
    // No access token verifies once its family or itself was revoked, and
    // none verifies for a family the list does not show active.
    for (aid, rid, text) in &known.access {
        let r = store.verify(text);
        if e.revoked.contains(rid.as_str()) || e.revoked_access.contains(aid) {
            let kind = r.as_ref().err().map(|e| e.kind());
            assert!(
                kind == Some("revoked") || kind == Some("invalid_token"),
                "cycle {cycle}: invariant 2: access token {aid} of a revoked family verified: {r:?}"
            );
        }
        if let Ok(p) = &r {
            let parent = listed.get(rid.as_str()).map(|t| &t.state);
            assert_eq!(
                parent,
                Some(&TokenState::Active),
                "cycle {cycle}: access token {aid} verifies but its family is not active"
            );
            assert_eq!(store.member_role(&p.org, &p.user), Some(p.role));
        }
    }
    // Acknowledged membership changes hold (unless the call in flight
    // touched the same member).
    for ((org, user), role) in &e.roles {
        if pending.contains(&format!("{org} {user}")) {
            continue;
        }
        assert_eq!(
            store.member_role(org, user),
            *role,
            "cycle {cycle}: acknowledged role of {org}/{user} lost"
        );
    }
    e.acked
}

/// Runs this test binary's test `test` as a child with `env`, lets it work
/// for `wait`, and kills it with SIGKILL (it must still be running: a child
/// that stopped by itself failed, and its stderr says why).
fn run_until_killed(
    dir: &Path,
    test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    wait: Duration,
    cycle: u64,
) {
    let err_path = dir.join(format!("{test}.stderr"));
    let stderr = File::create(&err_path).expect("stderr file");
    let mut c = this_test(test);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut c = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning the child");
    std::thread::sleep(wait);
    if let Some(status) = c.try_wait().expect("child status") {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        panic!("cycle {cycle}: the child stopped by itself ({status}):\n{err}");
    }
    c.kill().expect("SIGKILL");
    let status = c.wait().expect("reaping the child");
    assert!(!status.success(), "cycle {cycle}: child was not killed");
}

fn cycles() -> u64 {
    std::env::var("TOKENVAULT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CYCLES)
}

#[test]
fn invariant_2_and_6_acknowledged_writes_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir: PathBuf = tmp.path().to_path_buf();
    let mut rng = Rng(0x5EED_CAFE ^ u64::from(std::process::id()));
    let (n, mut acked, mut killed) = (cycles(), 0, 0);
    for cycle in 0..n {
        let seed = rng.next().to_string();
        let wait = Duration::from_millis(40 + rng.next() % 400);
        run_until_killed(
            &dir,
            "invariant_2_and_6_acknowledged_writes_survive_sigkill",
            &[(CHILD_ENV, dir.as_os_str()), (SEED_ENV, seed.as_ref())],
            wait,
            cycle,
        );
        killed += 1;
        acked = check_after_crash(&dir, cycle);
    }
    let e = expectations(&read_lines(&dir.join("acks.log")));
    let (suspended, rotated) = (e.disabled.len(), e.rotated.len());
    let (spent, reused) = (e.spent.len(), e.reused);
    eprintln!(
        "crash test: {killed} SIGKILL cycles, {acked} acknowledged calls checked \
         ({suspended} tokens suspended or enabled, {rotated} rotated, {spent} spent \
         by a refresh, {reused} reuses)"
    );
    assert_eq!(killed, n);
    assert!(
        acked > 0,
        "the children acknowledged nothing: the test tested nothing"
    );
    assert!(
        suspended > 0 && rotated > 0,
        "no suspension or no rotation was acknowledged: they went untested"
    );
    assert!(
        spent > 0 && reused > 0,
        "no rotation on use or no reuse was acknowledged: they went untested"
    );
}

const GROUP_CHILD_ENV: &str = "TOKENVAULT_GROUP_CRASH_CHILD";

/// Child of the group-commit crash test: three threads issue tokens for
/// different members as fast as they can (their flushes shared by group
/// commit) and each logs, synced, the id of every token whose `generate`
/// returned.
fn group_child(dir: &Path) {
    let store = open(dir);
    let users = ["a1", "u1", "u2"];
    std::thread::scope(|s| {
        for (t, user) in users.iter().enumerate() {
            let store = &store;
            s.spawn(move || {
                let mut log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("group{t}.log")))
                    .expect("ack log");
                let me = Actor::new("acme", *user);
                loop {
                    let t = store.generate(&me, Default::default()).expect("generate");
                    writeln!(log, "{}", t.info.id).expect("ack");
                    log.sync_data().expect("sync ack");
                }
            });
        }
    });
}

/// Group commit (one flush for several concurrent durable calls) loses
/// nothing: after SIGKILL, every token whose `generate` returned, in any
/// of the threads, is in the store.
#[test]
fn concurrent_durable_calls_survive_sigkill() {
    if let Some(dir) = std::env::var_os(GROUP_CHILD_ENV) {
        group_child(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir: PathBuf = tmp.path().to_path_buf();
    {
        let store = open(&dir);
        for (org, user, role) in MEMBERS {
            store.add_member(org, user, role).expect("member");
        }
    }
    let mut rng = Rng(0x6A0C ^ u64::from(std::process::id()));
    let mut checked = 0;
    for cycle in 0..5 {
        run_until_killed(
            &dir,
            "concurrent_durable_calls_survive_sigkill",
            &[(GROUP_CHILD_ENV, dir.as_os_str())],
            Duration::from_millis(150 + rng.next() % 300),
            cycle,
        );
        let store = open(&dir);
        let owner = Actor::new("acme", "o");
        let stored: HashSet<String> = store
            .list_org(&owner)
            .expect("list")
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        let mut acked = 0;
        for t in 0..3 {
            for id in read_lines(&dir.join(format!("group{t}.log"))) {
                assert!(
                    stored.contains(&id),
                    "cycle {cycle}: acknowledged token {id} lost"
                );
                acked += 1;
            }
        }
        assert!(store.check_integrity().expect("check").is_clean());
        checked = acked;
    }
    eprintln!("group commit crash test: {checked} acknowledged tokens checked");
    assert!(checked > 0, "the children acknowledged nothing");
}
