//! The operations that drive the store and the model side by side: one
//! public call each (or a clock move, or a reopen), decoded from bytes
//! ([`OP_BYTES`] each, see [`decode_op`]) so that proptest
//! (`tests/model_ops.rs`) and the fuzzer (the `ops` target) share one
//! generator, over a deliberately small universe of orgs, users and tokens.

use tokenvault::Role;

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
/// Scope lists an exchange asks to narrow to: within every role, within
/// some, repeated, unknown.
pub const NARROWINGS: [&[&str]; 6] = [
    &["read"],
    &["squad-read", "read", "read"],
    &["incident-write"],
    &["user-write", "read"],
    &["org-admin"],
    &[UNKNOWN_SCOPE],
];
/// Longest operation sequence taken from one input.
pub const MAX_OPS: usize = 64;
/// Bytes per encoded operation.
pub const OP_BYTES: usize = 8;

/// Clients an exchange may name (`Op::ExchangeFrom`): address and user
/// agent. The last one's agent carries what looks like a token of the
/// model's prefix, so the store keeps its address only.
pub(crate) const CLIENTS: [(Option<&str>, Option<&str>); 4] = [
    (Some("192.0.2.1"), Some("bot/1")),
    (Some("2001:db8::2"), None),
    (None, Some("cron/2")),
    (Some("198.51.100.3"), Some("leaky tvr_abc")),
];

const ADVANCES: [u64; 8] = [1, 1, 30, 299, 300, 301, 601, 3600];

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
    /// `assign_pending`: no secret until the member claims it.
    AssignPending {
        org: u8,
        actor: u8,
        user: u8,
        opts: Opts,
    },
    /// `claim` of a pending token by id.
    Claim {
        org: u8,
        user: u8,
        tok: Tok,
    },
    Exchange(Tok),
    /// `exchange_with_scopes`: an access token narrowed to these scopes.
    ExchangeScoped(Tok, &'static [&'static str]),
    /// `exchange_from`: an exchange by the client `CLIENTS[i]`.
    ExchangeFrom(Tok, u8),
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
    /// `disable` (`disable: true`) or `enable` of a refresh token by id.
    Suspend {
        org: u8,
        user: u8,
        tok: Tok,
        disable: bool,
    },
    /// `rotate` of a refresh token by id, with a grace period in seconds.
    Rotate {
        org: u8,
        user: u8,
        tok: Tok,
        grace: u64,
    },
    /// `set_org_policy` with a maximum lifetime, an unused expiry and
    /// rotation on use.
    SetPolicy {
        org: u8,
        user: u8,
        max_lifetime: Option<u64>,
        unused_expiry: Option<u64>,
        rotate_on_use: bool,
    },
    /// `oauth_refresh` (`POST /oauth/token`), narrowed to these scopes when
    /// any: rotates under the organization's `rotate_on_use`; a spent token
    /// past the leeway revokes its family.
    OAuthRefresh(Tok, &'static [&'static str]),
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

pub(crate) fn org_name(i: u8) -> &'static str {
    ORGS.get(i as usize).copied().unwrap_or("bad/org")
}

pub(crate) fn user_name(i: u8) -> &'static str {
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
        7 if g % 3 == 0 => Op::AssignPending {
            org: org_ix(a),
            actor: user_ix(b),
            user: user_ix(c),
            opts: opts(d, e, f),
        },
        7 => Op::Assign {
            org: org_ix(a),
            actor: user_ix(b),
            user: user_ix(c),
            opts: opts(d, e, f),
        },
        11 if g % 2 == 0 => {
            Op::ExchangeScoped(tok(a, b), NARROWINGS[c as usize % NARROWINGS.len()])
        }
        10 if g % 2 == 1 => Op::OAuthRefresh(
            tok(a, b),
            if c % 3 == 0 {
                NARROWINGS[d as usize % NARROWINGS.len()]
            } else {
                &[]
            },
        ),
        9 if g % 2 == 0 => Op::ExchangeFrom(tok(a, b), c % CLIENTS.len() as u8),
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
        25..=26 => Op::Advance(ADVANCES[(a % 8) as usize]),
        27 => Op::SetPolicy {
            org: org_ix(a),
            user: user_ix(b),
            max_lifetime: [None, None, Some(0), Some(300), Some(1000)][(c % 5) as usize],
            unused_expiry: [None, None, Some(0), Some(300), Some(601)][(d % 5) as usize],
            rotate_on_use: e % 2 == 1,
        },
        28 => Op::Flush,
        29 => Op::Reopen,
        30 if e % 4 == 3 => Op::Claim {
            org: org_ix(a),
            user: user_ix(b),
            tok: tok(c, d),
        },
        30 => Op::Suspend {
            org: org_ix(a),
            user: user_ix(b),
            tok: tok(c, d),
            disable: e % 4 != 0,
        },
        _ => Op::Rotate {
            org: org_ix(a),
            user: user_ix(b),
            tok: tok(c, d),
            grace: [0, 1, 30, 300, 3600, 86_400, 7 * 86_400, 7 * 86_400 + 1][(g % 8) as usize],
        },
    }
}

/// Decodes a whole input into at most [`MAX_OPS`] operations.
pub fn decode_ops(data: &[u8]) -> Vec<Op> {
    data.chunks(OP_BYTES)
        .take(MAX_OPS)
        .map(|c| decode_op(&mut Bytes::new(c)))
        .collect()
}
