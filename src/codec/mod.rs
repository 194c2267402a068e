//! Everything the store writes to disk, and the one place that encodes and
//! decodes it: serde + bincode 2 behind a leading format-version byte.

use std::net::IpAddr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::Role;
use crate::types::ClientInfo;

/// The version byte in front of every record.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// The version byte of a refresh record that carries its issue event: the
/// version-1 body, then the event's sequence number (8 bytes, big-endian)
/// and whether it was an assignment (1 byte).
pub(crate) const REFRESH_WITH_EVENT: u8 = 2;
const ISSUE_TRAILER: usize = 9;
/// The version byte of a refresh record that carries lifecycle state
/// ([`Lifecycle`]): the version-1 body, then the lifecycle's bincode, its
/// length (2 bytes, big-endian), then an issue trailer as version 2's
/// (a sequence number of 0 and a flag of 0 when the record carries no
/// issue event). Only a record whose lifecycle is not the default is
/// written so: every other record keeps version 1 or 2.
pub(crate) const REFRESH_WITH_LIFECYCLE: u8 = 3;
/// The version byte of a refresh record that carries rotation-on-use state
/// ([`Lifecycle::spent`], [`Lifecycle::family`]): laid out as version 3,
/// with the rotation state's bincode and its length (2 bytes, big-endian)
/// between the lifecycle's length and the issue trailer. Only a record with
/// such state is written so (the version-3 part may then be the default);
/// every other record keeps version 1, 2 or 3.
pub(crate) const REFRESH_WITH_ROTATION: u8 = 4;
/// The version byte of an audit event that stands for several refusals:
/// the version-1 body, then how many (8 bytes, big-endian) and the time of
/// the last (8 bytes, big-endian). An event of one call is version 1, as
/// events always were, and decodes with a count of 1.
pub(crate) const EVENT_WITH_COUNT: u8 = 2;
const COUNT_TRAILER: usize = 16;
/// The version byte of an access record narrowed to some of its refresh
/// token's scopes: the version-1 body, then the scope names' bincode (a
/// list of strings), then that list's length in bytes (2 bytes,
/// big-endian). An access record that is not narrowed keeps version 1, as
/// access records always were, and decodes as not narrowed.
pub(crate) const ACCESS_WITH_SCOPES: u8 = 2;
/// The most scope names an access record may be narrowed to (a policy names
/// at most 64).
const MAX_ACCESS_SCOPES: usize = 64;
/// No record is larger than this; decoding stops rather than allocate more.
const MAX_RECORD: usize = 64 * 1024;

/// A member of an organization, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    pub org: String,
    pub user: String,
    pub role: Role,
    /// Tokens of this member created before this time are revoked.
    pub not_before: u64,
}

/// An organization's token policy, as stored (see `crate::OrgPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrgPolicyRecord {
    /// Tokens created or rotated expire within this many seconds; older
    /// ones stop at use once this old.
    pub max_lifetime: Option<u64>,
    /// A token not exchanged for this many seconds is expired.
    pub unused_expiry: Option<u64>,
    /// Refreshes of OAuth clients rotate the refresh token.
    pub rotate_on_use: bool,
}

/// Whether a refresh token is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredState {
    Active,
    Revoked {
        at: u64,
        by: String,
        reason: Option<String>,
    },
}

/// A refresh token, as stored. `verifier` is the keyed blake3 hash of the
/// secret, never the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub id: [u8; 16],
    pub org: String,
    pub user: String,
    pub role_at_issue: Role,
    pub scopes: Vec<String>,
    pub label: Option<String>,
    pub created_at: u64,
    pub created_by: String,
    pub expires_at: Option<u64>,
    pub state: StoredState,
    pub verifier: [u8; 32],
    /// The audit event of the call that issued the token, when the record
    /// carries it (see [`IssueEvent`]); not part of the bincode body.
    #[serde(skip)]
    pub issue: Option<IssueEvent>,
    /// Lifecycle state beyond active and revoked (see [`Lifecycle`]); not
    /// part of the bincode body (see [`REFRESH_WITH_LIFECYCLE`]).
    #[serde(skip)]
    pub life: Lifecycle,
}

/// A refresh token's lifecycle state beside [`StoredState`]: suspension
/// and rotation. The default (all off) is what every record written
/// before these existed means, and such a record is written as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lifecycle {
    /// Suspended (`disable`): neither it nor its access tokens verify
    /// until enabled again.
    pub disabled: bool,
    /// Rotated: replaced by a new token (its own `expires_at` was cut to
    /// the end of the grace period when it was rotated). The audit event
    /// `token.rotate` names both tokens.
    pub rotated: bool,
    /// Assigned pending: no secret exists yet (the verifier matches none)
    /// until its member claims it, which they may until this time (Unix
    /// seconds); 0 once claimed, or for a token never pending.
    pub pending_until: u64,
    /// Spent by a refresh that rotated it on use (its organization's
    /// `rotate_on_use`): it (and its access tokens) die at this time, the
    /// end of the leeway (Unix seconds; 0: not spent), and `rotated` is
    /// set. Its `expires_at` keeps what it was issued with, which a retry
    /// within the leeway copies to another successor. Presented after
    /// that time, it is a reuse. Not in this struct's serde form (see
    /// [`REFRESH_WITH_ROTATION`]).
    #[serde(skip)]
    pub spent_until: u64,
    /// The original token of its rotation-on-use family, for a successor
    /// made by a rotation on use; `None` for a token that is its own
    /// family's original. Not in this struct's serde form.
    #[serde(skip)]
    pub family: Option<[u8; 16]>,
}

/// What a version-4 refresh record adds to the version-3 lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RotationState {
    spent_until: u64,
    family: Option<[u8; 16]>,
}

impl Lifecycle {
    fn is_default(&self) -> bool {
        *self == Lifecycle::default()
    }

    /// Whether the version-3 part (what the serde form holds) is the
    /// default.
    fn v3_is_default(&self) -> bool {
        !self.disabled && !self.rotated && self.pending_until == 0
    }

    fn rotation(&self) -> RotationState {
        RotationState {
            spent_until: self.spent_until,
            family: self.family,
        }
    }
}

/// The audit event of a `token.generate` or `token.assign` call, kept inside
/// the refresh record it created so that issuing a token is one write. Its
/// other fields are the record's: `at` is `created_at`, the actor is
/// `created_by`, the target is "`id` for `user`", the outcome "ok".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IssueEvent {
    /// The event's audit sequence number.
    pub seq: u64,
    /// `token.assign` rather than `token.generate`.
    pub assigned: bool,
}

impl StoredState {
    /// Whether a revocation still changes a token in this state: the
    /// backends' one predicate for revoking (a single revocation and a bulk
    /// one alike). A state added to the lifecycle says here whether it can
    /// be revoked.
    #[inline]
    pub(crate) fn revocable(&self) -> bool {
        match self {
            StoredState::Active => true,
            StoredState::Revoked { .. } => false,
        }
    }
}

impl RefreshRecord {
    /// Whether a bulk revocation of tokens created before `before`
    /// (`u64::MAX`: all) revokes this one.
    #[inline]
    pub(crate) fn revocable_before(&self, before: u64) -> bool {
        self.state.revocable() && self.created_at < before
    }

    /// Marks the record rotated, dying at `dies_at` (its expiry lowered to
    /// it, never raised): what a rotation does to the old token, on every
    /// backend.
    pub(crate) fn rotate_to(&mut self, dies_at: u64) {
        self.expires_at = Some(self.expires_at.map_or(dies_at, |e| e.min(dies_at)));
        self.life.rotated = true;
    }

    /// Marks the record spent by a rotation on use, dying at `dies_at`
    /// (never later than its own expiry, which it keeps; a second spend
    /// within the leeway keeps the first one's end).
    pub(crate) fn spend_to(&mut self, dies_at: u64) {
        let end = dies_at.max(1).min(self.expires_at.unwrap_or(u64::MAX));
        self.life.rotated = true;
        self.life.spent_until = match self.life.spent_until {
            0 => end,
            t => t.min(end),
        };
    }

    /// When the token stops by its own expiry, or by the end of its leeway
    /// once spent: what lists show as its `expires_at`.
    pub(crate) fn effective_expiry(&self) -> Option<u64> {
        match self.life.spent_until {
            0 => self.expires_at,
            t => Some(self.expires_at.map_or(t, |e| e.min(t))),
        }
    }

    /// The original token of its rotation-on-use family (itself if it is
    /// the original).
    pub(crate) fn family_root(&self) -> [u8; 16] {
        self.life.family.unwrap_or(self.id)
    }

    /// The audit event this record carries, written out in full.
    pub(crate) fn issue_event(&self) -> Option<EventRecord> {
        let issue = self.issue?;
        Some(EventRecord {
            seq: issue.seq,
            at: self.created_at,
            org: self.org.clone(),
            actor: self.created_by.clone(),
            action: if issue.assigned {
                "token.assign"
            } else {
                "token.generate"
            }
            .into(),
            target: Some(issue_target(&self.id, &self.user)),
            outcome: "ok".into(),
            count: 1,
            last_at: self.created_at,
        })
    }
}

/// The target of a `token.generate` or `token.assign` event.
pub(crate) fn issue_target(id: &[u8; 16], user: &str) -> String {
    format!("{} for {user}", crate::TokenId(*id))
}

impl std::fmt::Debug for RefreshRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRecord")
            .field("id", &crate::TokenId(self.id))
            .field("org", &self.org)
            .field("user", &self.user)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// An access token, as stored (keyed by parent refresh id ‖ access id).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessRecord {
    pub id: [u8; 16],
    pub refresh_id: [u8; 16],
    pub issued_at: u64,
    pub expires_at: u64,
    pub revoked: bool,
    pub verifier: [u8; 32],
    /// The scopes it was narrowed to at exchange (`scope` of
    /// `POST /oauth/token`), sorted; `None`: its refresh token's scopes.
    /// Not part of the bincode body (see [`ACCESS_WITH_SCOPES`]).
    #[serde(skip)]
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("id", &crate::TokenId(self.id))
            .field("refresh_id", &crate::TokenId(self.refresh_id))
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub seq: u64,
    pub at: u64,
    pub org: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    /// How many calls the event stands for (refusals coalesced into one);
    /// not part of the bincode body (see [`EVENT_WITH_COUNT`]).
    #[serde(skip)]
    pub count: u64,
    /// When the last of them was made (`at` for a single call); not part
    /// of the bincode body.
    #[serde(skip)]
    pub last_at: u64,
}

/// Encodes an audit event: version 1 for one call, version 2 (with the
/// count and the last time) for coalesced refusals.
pub(crate) fn encode_event(e: &EventRecord) -> Result<Vec<u8>> {
    let mut out = encode(e)?;
    if e.count > 1 || e.last_at > e.at {
        out[0] = EVENT_WITH_COUNT;
        out.extend_from_slice(&e.count.max(1).to_be_bytes());
        out.extend_from_slice(&e.last_at.max(e.at).to_be_bytes());
    }
    Ok(out)
}

/// Decodes an audit event of either version; a version-1 event is one
/// call (count 1, last at its time).
pub(crate) fn decode_event(bytes: &[u8]) -> Result<EventRecord> {
    let Some((&EVENT_WITH_COUNT, rest)) = bytes.split_first() else {
        return decode::<EventRecord>(bytes, "event").map(EventRecord::single);
    };
    let Some(split) = rest.len().checked_sub(COUNT_TRAILER) else {
        return Err(Error::Corrupt("event record too short".into()));
    };
    let (body, trailer) = rest.split_at(split);
    let mut e: EventRecord = decode_body(body, "event")?;
    let mut word = [0u8; 8];
    word.copy_from_slice(&trailer[..8]);
    e.count = u64::from_be_bytes(word);
    word.copy_from_slice(&trailer[8..]);
    e.last_at = u64::from_be_bytes(word);
    if e.count == 0 || e.last_at < e.at {
        return Err(Error::Corrupt(
            "event record: a count of 0 or a last time before the first".into(),
        ));
    }
    Ok(e)
}

impl EventRecord {
    /// The event as one call: count 1, last at its time.
    pub(crate) fn single(mut self) -> EventRecord {
        self.count = 1;
        self.last_at = self.at;
        self
    }
}

/// The tag after the time in a last-use value that names its client.
const LAST_USE_CLIENT: u8 = 1;

/// A refresh token's last use as stored: the time (8 bytes, big-endian),
/// then, when a client is known, [`LAST_USE_CLIENT`], the address (`0`
/// none, `4` and four bytes, `6` and sixteen bytes) and the user agent
/// (UTF-8, the rest). A value of the time alone is what earlier versions
/// wrote.
pub(crate) fn encode_last_use(at: u64, client: Option<&ClientInfo>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&at.to_be_bytes());
    if let Some(c) = client.filter(|c| !c.is_empty()) {
        out.push(LAST_USE_CLIENT);
        match c.ip() {
            None => out.push(0),
            Some(IpAddr::V4(ip)) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(c.user_agent().unwrap_or("").as_bytes());
    }
    out
}

/// Reads a value of [`encode_last_use`] (or of earlier versions: the time
/// alone); `None` if it is not one.
pub(crate) fn decode_last_use(v: &[u8]) -> Option<(u64, Option<ClientInfo>)> {
    let (at, rest) = v.split_first_chunk::<8>()?;
    let at = u64::from_be_bytes(*at);
    let Some((&tag, rest)) = rest.split_first() else {
        return Some((at, None));
    };
    if tag != LAST_USE_CLIENT {
        return None;
    }
    let (&kind, rest) = rest.split_first()?;
    let (ip, agent) = match kind {
        0 => (None, rest),
        4 => {
            let (ip, rest) = rest.split_first_chunk::<4>()?;
            (Some(IpAddr::from(*ip)), rest)
        }
        6 => {
            let (ip, rest) = rest.split_first_chunk::<16>()?;
            (Some(IpAddr::from(*ip)), rest)
        }
        _ => return None,
    };
    if agent.len() > ClientInfo::MAX_AGENT {
        return None;
    }
    let agent = std::str::from_utf8(agent).ok()?;
    let client = ClientInfo::new(ip, Some(agent));
    Some((at, (!client.is_empty()).then_some(client)))
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `…`
/// when anything was cut (`max` is at least 3, the ellipsis' length).
pub(crate) fn truncate_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD>()
}

/// Appends to a vector (encoding straight into the output, after the
/// version byte, with no intermediate buffer).
struct Append<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for Append<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Encodes a record with its version byte.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // Large enough for an access record or a typical refresh record, so
    // that encoding allocates once.
    let mut out = Vec::with_capacity(192);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_writer(value, Append(&mut out), config())
        .map_err(|e| Error::Corrupt(format!("cannot encode a record: {e}")))?;
    Ok(out)
}

/// Decodes a record, refusing unknown versions, trailing bytes and anything
/// that would need more than 64 KiB.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => decode_body(body, what),
        Some((v, _)) => Err(Error::Corrupt(format!(
            "{what} record has unknown format version {v}"
        ))),
        None => Err(Error::Corrupt(format!("empty {what} record"))),
    }
}

/// Decodes the bincode body of a record (what follows the version byte).
fn decode_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let (v, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| Error::Corrupt(format!("undecodable {what} record: {e}")))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "{what} record has {} trailing bytes",
            body.len() - used
        )));
    }
    Ok(v)
}

// ----- fast decoding of the two records a store reads at open -----
//
// Opening a store decodes every refresh and access record. Through serde,
// bincode visits a byte array element by element and a refresh record costs
// about 5,000 instructions. The readers below decode the same bytes
// directly; they are sound by construction (they accept an input only if
// bincode's serde decoding accepts it and yields the same value) and fall
// back to serde decoding for anything they do not handle. A test checks
// both properties on random records and random damage.

/// Decodes an access record of either version (as `decode`, faster for
/// version 1).
pub(crate) fn decode_access(bytes: &[u8]) -> Result<AccessRecord> {
    let Some((&ACCESS_WITH_SCOPES, rest)) = bytes.split_first() else {
        return match fast_access(bytes) {
            Some(a) => Ok(a),
            None => decode(bytes, "access"),
        };
    };
    let Some(split) = rest.len().checked_sub(2) else {
        return Err(Error::Corrupt("access record too short".into()));
    };
    let (rest, len) = rest.split_at(split);
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let Some(split) = rest.len().checked_sub(len) else {
        return Err(Error::Corrupt("access record: bad scopes length".into()));
    };
    let (body, scopes) = rest.split_at(split);
    let mut rec: AccessRecord = decode_body(body, "access")?;
    let scopes: Vec<String> = decode_body(scopes, "access scopes")?;
    if scopes.is_empty() || scopes.len() > MAX_ACCESS_SCOPES {
        // Never written so: an access token grants at least one scope.
        return Err(Error::Corrupt("access record: bad number of scopes".into()));
    }
    rec.scopes = Some(scopes);
    Ok(rec)
}

/// Encodes an access record: version 1, or version 2 when it is narrowed
/// to some scopes.
pub(crate) fn encode_access(rec: &AccessRecord) -> Result<Vec<u8>> {
    let mut out = encode(rec)?;
    if let Some(scopes) = &rec.scopes {
        if scopes.is_empty() || scopes.len() > MAX_ACCESS_SCOPES {
            return Err(Error::Corrupt("access record: bad number of scopes".into()));
        }
        out[0] = ACCESS_WITH_SCOPES;
        let before = out.len();
        bincode::serde::encode_into_writer(scopes, Append(&mut out), config())
            .map_err(|e| Error::Corrupt(format!("cannot encode a record: {e}")))?;
        let len = u16::try_from(out.len() - before)
            .map_err(|_| Error::Corrupt("access scopes too large".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

/// Encodes a refresh record: version 1, or version 2 when it carries its
/// issue event.
pub(crate) fn encode_refresh(rec: &RefreshRecord) -> Result<Vec<u8>> {
    encode_refresh_with(rec, rec.issue)
}

/// Encodes a refresh record without the issue event it may carry (a
/// backend that stores events apart): version 1, or version 3 when it has
/// lifecycle state.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn encode_refresh_bare(rec: &RefreshRecord) -> Result<Vec<u8>> {
    encode_refresh_with(rec, None)
}

fn encode_refresh_with(rec: &RefreshRecord, issue: Option<IssueEvent>) -> Result<Vec<u8>> {
    let mut out = encode(rec)?;
    if !rec.life.is_default() {
        let rotation = rec.life.rotation();
        let with_rotation = rotation != RotationState::default();
        out[0] = if with_rotation {
            REFRESH_WITH_ROTATION
        } else {
            REFRESH_WITH_LIFECYCLE
        };
        append_sized(&mut out, &rec.life)?;
        if with_rotation {
            append_sized(&mut out, &rotation)?;
        }
        let (seq, assigned) = issue.map_or((0, false), |i| (i.seq, i.assigned));
        out.extend_from_slice(&seq.to_be_bytes());
        out.push(u8::from(assigned));
        return Ok(out);
    }
    if let Some(issue) = issue {
        out[0] = REFRESH_WITH_EVENT;
        out.extend_from_slice(&issue.seq.to_be_bytes());
        out.push(u8::from(issue.assigned));
    }
    Ok(out)
}

/// Appends `value`'s bincode and then its length (2 bytes, big-endian).
fn append_sized<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    let before = out.len();
    bincode::serde::encode_into_writer(value, Append(out), config())
        .map_err(|e| Error::Corrupt(format!("cannot encode a record: {e}")))?;
    let len = u16::try_from(out.len() - before)
        .map_err(|_| Error::Corrupt("lifecycle state too large".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Splits off the end of `rest` a part written by [`append_sized`]:
/// `(what is before it, the part)`.
fn split_sized<'a>(rest: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8])> {
    let Some(split) = rest.len().checked_sub(2) else {
        return Err(Error::Corrupt("refresh record too short".into()));
    };
    let (rest, len) = rest.split_at(split);
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let Some(split) = rest.len().checked_sub(len) else {
        return Err(Error::Corrupt(format!("refresh record: bad {what} length")));
    };
    Ok(rest.split_at(split))
}

/// A stored refresh record's parts: its version-1 body, the issue event a
/// version-2, -3 or -4 record carries after it, and the lifecycle state a
/// version-3 or -4 record carries. The body is `None` when the record is none of
/// these versions (serde decoding then says what it is).
type RefreshSplit<'a> = (Option<&'a [u8]>, Option<IssueEvent>, Lifecycle);

fn split_refresh(bytes: &[u8]) -> Result<RefreshSplit<'_>> {
    let (version, rest) = match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => return Ok((Some(body), None, Lifecycle::default())),
        Some((
            &v @ (REFRESH_WITH_EVENT | REFRESH_WITH_LIFECYCLE | REFRESH_WITH_ROTATION),
            rest,
        )) => (v, rest),
        _ => return Ok((None, None, Lifecycle::default())),
    };
    let Some(split) = rest.len().checked_sub(ISSUE_TRAILER) else {
        return Err(Error::Corrupt("refresh record too short".into()));
    };
    let (rest, trailer) = rest.split_at(split);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&trailer[..8]);
    let assigned = match trailer[8] {
        0 => false,
        1 => true,
        _ => return Err(Error::Corrupt("refresh record: bad issue flag".into())),
    };
    let seq = u64::from_be_bytes(seq);
    let issue = match (seq, version) {
        (0, REFRESH_WITH_LIFECYCLE | REFRESH_WITH_ROTATION) if !assigned => None,
        (0, _) => return Err(Error::Corrupt("refresh record: issue event 0".into())),
        (seq, _) => Some(IssueEvent { seq, assigned }),
    };
    if version == REFRESH_WITH_EVENT {
        return Ok((Some(rest), issue, Lifecycle::default()));
    }
    let (rest, rotation) = if version == REFRESH_WITH_ROTATION {
        let (rest, part) = split_sized(rest, "rotation state")?;
        let rotation: RotationState = decode_body(part, "refresh rotation state")?;
        if rotation == RotationState::default() {
            // Never written so: without rotation state it is version 3.
            return Err(Error::Corrupt(
                "refresh record: version 4 without rotation state".into(),
            ));
        }
        (rest, rotation)
    } else {
        (rest, RotationState::default())
    };
    let (body, life) = split_sized(rest, "lifecycle")?;
    let mut life: Lifecycle = decode_body(life, "refresh lifecycle")?;
    if version == REFRESH_WITH_LIFECYCLE && life.v3_is_default() {
        // Never written so: a default lifecycle keeps version 1 or 2.
        return Err(Error::Corrupt(
            "refresh record: version 3 without lifecycle state".into(),
        ));
    }
    life.spent_until = rotation.spent_until;
    life.family = rotation.family;
    Ok((Some(body), issue, life))
}

/// Decodes a refresh record of either version (as `decode`, faster).
pub(crate) fn decode_refresh(bytes: &[u8]) -> Result<RefreshRecord> {
    let (body, issue, life) = split_refresh(bytes)?;
    let Some(body) = body else {
        return decode(bytes, "refresh");
    };
    // The body is that of a version-1 record.
    let mut rec = match fast_refresh(body) {
        Some(r) => r,
        None => decode_body(body, "refresh")?,
    };
    rec.issue = issue;
    rec.life = life;
    Ok(rec)
}

/// The record types, for [`decode_any`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum RecordType {
    /// A member record.
    Member,
    /// A refresh-token record.
    Refresh,
    /// An access-token record.
    Access,
    /// An audit event.
    Event,
    /// An organization's token policy.
    OrgPolicy,
}

/// Decodes `bytes` as the given record type and re-encodes it; used by the
/// fuzz target and the corpus replay test. Returns whether it decoded.
///
/// # Errors
/// [`Error::Corrupt`] when the bytes are not a valid record.
#[doc(hidden)]
pub fn decode_any(kind: RecordType, bytes: &[u8]) -> Result<Vec<u8>> {
    match kind {
        RecordType::Member => encode(&decode::<MemberRecord>(bytes, "member")?),
        RecordType::Refresh => encode_refresh(&decode_refresh(bytes)?),
        RecordType::Access => encode_access(&decode_access(bytes)?),
        RecordType::Event => encode_event(&decode_event(bytes)?),
        RecordType::OrgPolicy => encode(&decode::<OrgPolicyRecord>(bytes, "org policy")?),
    }
}

/// Length-prefixed key parts so that no key is a prefix of another's parts.
pub(crate) fn member_key(org: &str, user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(org.len() + user.len() + 2);
    k.push(org.len() as u8);
    k.extend_from_slice(org.as_bytes());
    k.push(user.len() as u8);
    k.extend_from_slice(user.as_bytes());
    k
}

pub(crate) fn org_key(org: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(org.len() + 1);
    k.push(org.len() as u8);
    k.extend_from_slice(org.as_bytes());
    k
}

mod fast;

use fast::*;
pub(crate) use fast::{view_refresh, RefreshView};

#[cfg(test)]
mod tests;
