//! Public value types the store's calls take and return.

use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::{Role, ScopeSet};
use crate::token::{SecretToken, TokenId};

/// Who performs a management call: a member `(org, user)` already
/// authenticated by the host. The store reads the actor's role from its own
/// member records; it never trusts a role passed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Actor {
    /// The organization id.
    pub org: String,
    /// The user id within the organization.
    pub user: String,
}

impl Actor {
    /// The member `user` of `org`.
    pub fn new(org: impl Into<String>, user: impl Into<String>) -> Self {
        Actor {
            org: org.into(),
            user: user.into(),
        }
    }
}

/// Options of `generate` and `assign`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GenerateOptions {
    /// A label shown in lists.
    pub label: Option<String>,
    /// Narrow the token to these scopes (each must be allowed for the
    /// member's role); `None` gives every scope of the role.
    pub scopes: Option<Vec<String>>,
    /// Seconds until the refresh token expires; `None` for no expiry.
    pub expires_in: Option<u64>,
}

impl GenerateOptions {
    /// Sets the label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    /// Narrows the scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }
    /// Sets an expiry, in seconds from now.
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.expires_in = Some(secs);
        self
    }
}

/// The state of a refresh token as shown in lists.
///
/// With the cargo feature `serde` it serializes as a map whose `"state"`
/// is the lowercase name (`active`, `expired`, `revoked`, as
/// [`TokenState::as_str`], `Display` and the CLI's JSON say, `disabled`
/// and `pending` included), and a revoked
/// token's `revoked_at`, `revoked_by` and `revoke_reason` beside it; in a
/// [`TokenInfo`] those keys sit among the token's own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(tag = "state", rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum TokenState {
    /// Usable.
    Active,
    /// Past its expiry (a rotated token: past its grace period).
    Expired,
    /// Suspended (`disable`): neither it nor its access tokens verify until
    /// its holder or the Owner enables it again.
    Disabled,
    /// Assigned pending (`assign_pending`): its member has not claimed it
    /// yet, so no secret exists.
    Pending,
    /// Revoked.
    Revoked {
        /// When (Unix seconds).
        #[cfg_attr(feature = "serde", serde(rename = "revoked_at"))]
        at: u64,
        /// Who revoked it (a user id, `host` for membership changes, or
        /// `tokenvault` for the family of a reused spent token).
        #[cfg_attr(feature = "serde", serde(rename = "revoked_by"))]
        by: String,
        /// Why, if a reason was given.
        #[cfg_attr(feature = "serde", serde(rename = "revoke_reason"))]
        reason: Option<String>,
    },
}

impl std::fmt::Display for TokenState {
    /// `active`, `expired`, `disabled`, `pending` or `revoked`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TokenState {
    /// `active`, `expired`, `disabled`, `pending` or `revoked`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Disabled => "disabled",
            TokenState::Pending => "pending",
            TokenState::Revoked { .. } => "revoked",
        }
    }
}

/// A refresh token as shown in lists: never the secret.
///
/// With the cargo feature `serde`: its fields by name, the id as 32 hex
/// digits, `role_at_issue` lowercase, and the state flattened in
/// (`"state": "active"`, and for a revoked token `revoked_at`,
/// `revoked_by`, `revoke_reason`; see [`TokenState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TokenInfo {
    /// Public id.
    pub id: TokenId,
    /// Organization.
    pub org: String,
    /// The member the token belongs to.
    pub user: String,
    /// The member's role when the token was issued.
    pub role_at_issue: Role,
    /// Scopes the token carries (before intersection with the current role).
    pub scopes: Vec<String>,
    /// Label, if any.
    pub label: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Who created it: the member themselves, or the Owner who assigned it.
    pub created_by: String,
    /// Unix seconds, if it expires.
    pub expires_at: Option<u64>,
    /// The last exchange, Unix seconds.
    pub last_refresh: Option<u64>,
    /// The client address of the last exchange, when its host passed one
    /// ([`crate::TokenStore::exchange_from`]; the HTTP front passes the
    /// peer's). With `serde`, a string such as `"203.0.113.7"`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub last_used_ip: Option<IpAddr>,
    /// The user agent of the last exchange, when its host passed one: at
    /// most [`ClientInfo::MAX_AGENT`] bytes, without control characters,
    /// and never one that carried a token.
    #[cfg_attr(feature = "serde", serde(default))]
    pub last_used_agent: Option<String>,
    /// Active, expired or revoked.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub state: TokenState,
}

/// A refresh token just made: the secret is here once and nowhere else.
///
/// With the cargo feature `serde` it serializes as its [`TokenInfo`] alone,
/// without the secret; [`IssuedToken::showing_secret`] is the deliberate
/// way to include it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The refresh token text to hand to its holder.
    pub token: SecretToken,
    /// What lists will show of it.
    pub info: TokenInfo,
}

/// The answer of `exchange`, with the fields of Squadcast's
/// `GET /oauth/access-token`.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    /// The access token.
    pub access_token: SecretToken,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// The refresh token it was made from.
    pub refresh_token: SecretToken,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// The access token's public id.
    pub access_id: TokenId,
    /// The refresh token's public id.
    pub refresh_id: TokenId,
}

/// Who made an exchange, as its host saw the client: the network address
/// and the `User-Agent`. Lists show it as `last_used_ip` and
/// `last_used_agent` ([`TokenInfo`]). Pass it to
/// [`crate::TokenStore::exchange_from`].
///
/// The agent is cleaned when the value is made: control characters are
/// dropped and it is cut to [`ClientInfo::MAX_AGENT`] bytes (at a character
/// boundary); an empty one is none. The store also drops, at the exchange,
/// an agent that carries what looks like one of its tokens, so that a
/// secret never reaches a record.
///
/// ```
/// use tokenvault::ClientInfo;
/// let c = ClientInfo::new(Some("203.0.113.7".parse().unwrap()), Some("curl/8.5\n"));
/// assert_eq!(c.user_agent(), Some("curl/8.5"));
/// assert_eq!(c.ip().map(|ip| ip.to_string()).as_deref(), Some("203.0.113.7"));
/// let long = "x".repeat(1000);
/// assert_eq!(ClientInfo::new(None, Some(&long)).user_agent().unwrap().len(), ClientInfo::MAX_AGENT);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) agent: Option<Box<str>>,
}

impl ClientInfo {
    /// The longest user agent kept, in bytes.
    pub const MAX_AGENT: usize = 256;

    /// A client at `ip` (if known) that sent `user_agent` (if any), cleaned
    /// as the type says. Never fails, never blocks.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        ClientInfo {
            ip,
            agent: user_agent.and_then(clean_agent),
        }
    }

    /// The client's address, if known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The cleaned user agent, if any.
    pub fn user_agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Nothing known of the client.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.agent.is_none()
    }

    /// Whether the agent carries what looks like a token of `prefix`:
    /// `<prefix>r_` or `<prefix>a_` anywhere in it. Allocates nothing.
    pub(crate) fn agent_carries_token(&self, prefix: &str) -> bool {
        let Some(agent) = self.agent.as_deref() else {
            return false;
        };
        agent.match_indices(prefix).any(|(i, _)| {
            matches!(
                agent.as_bytes().get(i + prefix.len()..i + prefix.len() + 2),
                Some([b'r' | b'a', b'_'])
            )
        })
    }

    /// The same address without the agent.
    pub(crate) fn without_agent(&self) -> ClientInfo {
        ClientInfo {
            ip: self.ip,
            agent: None,
        }
    }
}

/// Whether `s` holds what looks like a token of any prefix: a kind letter
/// and `_` followed by a token's 72 base62 digits (payload and checksum).
fn carries_token_body(s: &str) -> bool {
    const BODY: usize = 72;
    let b = s.as_bytes();
    b.windows(2).enumerate().any(|(i, w)| {
        matches!(w, [b'r' | b'a', b'_'])
            && b.get(i + 2..i + 2 + BODY)
                .is_some_and(|body| body.iter().all(u8::is_ascii_alphanumeric))
    })
}

/// Drops an agent that carries a token (of any prefix) and control
/// characters, and cuts to [`ClientInfo::MAX_AGENT`] bytes at
/// a character boundary; `None` if nothing is left.
fn clean_agent(raw: &str) -> Option<Box<str>> {
    if carries_token_body(raw) {
        return None;
    }
    let mut out = String::with_capacity(raw.len().min(ClientInfo::MAX_AGENT));
    for c in raw.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > ClientInfo::MAX_AGENT {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim();
    (!trimmed.is_empty()).then(|| trimmed.into())
}

/// The effective scopes of a verified token.
#[derive(Clone)]
pub struct Scopes {
    pub(crate) set: ScopeSet,
    /// The policy's scope names by bit (interned: no reference count to
    /// bounce between threads that verify at the same time).
    pub(crate) names: &'static [Box<str>],
}

impl Scopes {
    /// Whether `scope` is granted.
    pub fn contains(&self, scope: &str) -> bool {
        self.names
            .iter()
            .position(|n| **n == *scope)
            .is_some_and(|i| self.set.contains(i as u8))
    }
    /// The scope names.
    pub fn to_vec(&self) -> Vec<String> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.set.contains(*i as u8))
            .map(|(_, n)| n.to_string())
            .collect()
    }
    /// Whether no scope is granted.
    pub fn is_empty(&self) -> bool {
        self.set.0 == 0
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        self.to_vec() == other.to_vec()
    }
}

/// Who a verified access token speaks for.
///
/// With the cargo feature `serde` it serializes (`org` and `user` as
/// strings, `role` lowercase, `scopes` as a list of names, the ids as hex);
/// it does not deserialize: a principal comes only from verification, and
/// its scopes refer to the store's policy.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Principal {
    /// Organization.
    #[cfg_attr(feature = "serde", serde(serialize_with = "arc_str"))]
    pub org: Arc<str>,
    /// The member.
    #[cfg_attr(feature = "serde", serde(serialize_with = "arc_str"))]
    pub user: Arc<str>,
    /// The member's current role.
    pub role: Role,
    /// The token's scopes ∩ the current role's scopes.
    pub scopes: Scopes,
    /// The refresh token the access token derives from.
    pub refresh_id: TokenId,
    /// The access token's id.
    pub access_id: TokenId,
    /// When the access token was issued (Unix seconds).
    pub issued_at: u64,
    /// When the access token expires (Unix seconds).
    pub expires_at: u64,
}

/// Which tokens a bulk revocation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum RevokeScope {
    /// Every token of one member of the actor's organization.
    Member(String),
    /// Every token of the actor's organization.
    Org,
}

/// An organization's token policy (its Owner sets it with
/// `TokenStore::set_org_policy`); the default has no limits.
///
/// With the cargo feature `serde`: its fields by name, durations in
/// seconds or `null`, as the CLI's `org policy --json` prints them (with
/// `org`).
///
/// ```
/// use tokenvault::OrgPolicy;
/// let p = OrgPolicy::default().max_lifetime(Some(90 * 86_400));
/// assert_eq!(p.max_lifetime, Some(7_776_000));
/// assert_eq!(p.unused_expiry, None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct OrgPolicy {
    /// The longest a token may live, in seconds: a token created or
    /// rotated without an explicit expiry gets it, one asking for more is
    /// refused (`usage`), and an older token that is past it stops working
    /// at its next use (as expired). `None`: no limit.
    pub max_lifetime: Option<u64>,
    /// A token not exchanged for this many seconds (since its creation or
    /// its last exchange) is expired, at use and by the purge. `None`: no
    /// limit.
    pub unused_expiry: Option<u64>,
    /// Rotation on use for OAuth clients (RFC 9700 §4.14): each refresh
    /// through [`TokenStore::oauth_refresh`](crate::TokenStore::oauth_refresh)
    /// (`POST /oauth/token`) returns a new refresh token and spends the one
    /// presented; presenting a spent token again revokes its whole family.
    /// Off by default.
    pub rotate_on_use: bool,
}

impl OrgPolicy {
    /// Sets [`OrgPolicy::max_lifetime`]. Does not block.
    pub fn max_lifetime(mut self, secs: Option<u64>) -> Self {
        self.max_lifetime = secs;
        self
    }
    /// Sets [`OrgPolicy::unused_expiry`]. Does not block.
    pub fn unused_expiry(mut self, secs: Option<u64>) -> Self {
        self.unused_expiry = secs;
        self
    }
    /// Sets [`OrgPolicy::rotate_on_use`]. Does not block.
    pub fn rotate_on_use(mut self, on: bool) -> Self {
        self.rotate_on_use = on;
        self
    }
}

/// One audit event (with the cargo feature `serde`: its fields by name, as
/// the CLI's `audit --json` prints them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct AuditEvent {
    /// Increasing sequence number.
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    /// Organization.
    pub org: String,
    /// Who acted (a user id, or `host` for membership calls).
    pub actor: String,
    /// What was called, e.g. `generate`, `revoke`, `member.add`.
    pub action: String,
    /// What it acted on (a token id or a user), if anything; at most 176
    /// bytes, ending in `…` where it was cut. For coalesced refusals, the
    /// first one's.
    pub target: Option<String>,
    /// `ok`, or `denied: …` / `failed: …`; at most 80 bytes.
    pub outcome: String,
    /// How many calls the event stands for: 1, or for refusals of the same
    /// actor, action and reason made within an hour of the first, how many
    /// there were.
    pub count: u64,
    /// When the last of them was made (Unix seconds; `at` for one call).
    pub last_at: u64,
}

/// What `purge_expired` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PurgeReport {
    /// Access records removed (expired, revoked, or of a dead family).
    pub access_removed: u64,
    /// Refresh records removed (revoked or expired longer ago than the
    /// retention).
    pub refresh_removed: u64,
    /// Audit events removed (their last call older than the audit
    /// retention).
    pub events_removed: u64,
    /// Whether more remains to purge (call again).
    pub more: bool,
}

/// Counts for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Organizations with at least one member.
    pub orgs: u64,
    /// Members.
    pub members: u64,
    /// Refresh tokens that are usable, or suspended (`disable`) and
    /// usable once enabled.
    pub active: u64,
    /// Refresh tokens that are revoked.
    pub revoked: u64,
    /// Refresh tokens that are expired.
    pub expired: u64,
    /// Access records held (live or awaiting purge).
    pub access_tokens: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Whether the store was loaded, when it was opened, from the
    /// warm-start files its last [`crate::TokenStore::close`] wrote (rather
    /// than by reading every record from the database).
    pub warm_start: bool,
}

/// What [`TokenStore::close`](crate::TokenStore::close) did.
///
/// Closing the last handle of a store lets go of its storage: on sled, a
/// checkpoint and warm-start files, so that the next open is quick. Closing
/// a handle while others are open (clones, a server's, a call still running
/// on a blocking thread) only makes every write durable; the report then
/// says how many handles remain, so a host can log it or wait for them
/// ([`TokenStore::close_timeout`](crate::TokenStore::close_timeout)).
///
/// ```
/// let store = tokenvault::TokenStore::temporary()?;
/// let report = store.close()?;
/// assert!(report.last_handle);
/// // A temporary store has nothing to keep for a next open.
/// assert!(!report.checkpoint && !report.warm_start_files);
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct CloseReport {
    /// Whether this was the last handle: the storage was let go of.
    pub last_handle: bool,
    /// How many other handles were still open (0 for the last handle): the
    /// close only flushed.
    pub handles_remaining: usize,
    /// Whether a checkpoint was written (sled: the next open has no log to
    /// replay). Only on the last handle of a store on disk.
    pub checkpoint: bool,
    /// Whether warm-start files were written (the next open reads them in
    /// one pass). Only on the last handle of a store on disk; failing to
    /// write them is no error, as they are only a cache.
    pub warm_start_files: bool,
}

impl std::fmt::Display for CloseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.last_handle {
            let n = self.handles_remaining;
            let s = if n == 1 { "" } else { "s" };
            return write!(
                f,
                "flushed only: {n} other handle{s} of the store still open (no checkpoint)"
            );
        }
        match (self.checkpoint, self.warm_start_files) {
            (true, true) => f.write_str("closed: checkpoint and warm-start files written"),
            (true, false) => f.write_str("closed: checkpoint written, no warm-start files"),
            (false, _) => {
                f.write_str("closed: every write durable (no checkpoint for this storage)")
            }
        }
    }
}

/// `Principal`'s `org` and `user`, shared strings, as plain strings.
#[cfg(feature = "serde")]
fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}
