//! Everything the store writes to disk, and the one place that encodes and
//! decodes it: serde + bincode 2 behind a leading format-version byte.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::Role;

/// The version byte in front of every record.
pub(crate) const FORMAT_VERSION: u8 = 1;
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
}

impl std::fmt::Debug for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("id", &crate::TokenId(self.id))
            .field("refresh_id", &crate::TokenId(self.refresh_id))
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
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
        Some((&FORMAT_VERSION, body)) => {
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
        Some((v, _)) => Err(Error::Corrupt(format!(
            "{what} record has unknown format version {v}"
        ))),
        None => Err(Error::Corrupt(format!("empty {what} record"))),
    }
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

/// A cursor over bincode 2 standard-configuration bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }
    /// bincode's variable-length unsigned integer, at most `max_tag`
    /// wide (251: u16, 252: u32, 253: u64 follow, little-endian).
    fn varint(&mut self, max_tag: u8) -> Option<u64> {
        let tag = self.byte()?;
        let v = match tag {
            0..=250 => u64::from(tag),
            251 => u64::from(u16::from_le_bytes(self.array()?)),
            252 => u64::from(u32::from_le_bytes(self.array()?)),
            253 => u64::from_le_bytes(self.array()?),
            _ => return None,
        };
        (tag <= max_tag).then_some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        self.varint(253)
    }
    /// An enum variant index (a u32).
    fn variant(&mut self) -> Option<u32> {
        self.varint(252).map(|v| v as u32)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u64()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn role(&mut self) -> Option<Role> {
        Role::ALL.get(self.variant()? as usize).copied()
    }
}

fn fast_access(bytes: &[u8]) -> Option<AccessRecord> {
    let (&FORMAT_VERSION, body) = bytes.split_first()? else {
        return None;
    };
    let mut c = Cursor(body);
    let rec = AccessRecord {
        id: c.array()?,
        refresh_id: c.array()?,
        issued_at: c.u64()?,
        expires_at: c.u64()?,
        revoked: c.flag()?,
        verifier: c.array()?,
    };
    c.0.is_empty().then_some(rec)
}

/// Refresh records up to this size take the fast path: bincode's 64 KiB
/// allocation limit cannot be reached within them.
const FAST_REFRESH_MAX: usize = 2048;

fn fast_refresh(bytes: &[u8]) -> Option<RefreshRecord> {
    if bytes.len() > FAST_REFRESH_MAX {
        return None;
    }
    let (&FORMAT_VERSION, body) = bytes.split_first()? else {
        return None;
    };
    let mut c = Cursor(body);
    let id = c.array()?;
    let org = c.string()?;
    let user = c.string()?;
    let role_at_issue = c.role()?;
    let n = usize::try_from(c.u64()?).ok()?;
    // Each scope takes at least one byte: a longer list cannot fit.
    if n > c.0.len() {
        return None;
    }
    let mut scopes = Vec::with_capacity(n);
    for _ in 0..n {
        scopes.push(c.string()?);
    }
    let label = if c.flag()? { Some(c.string()?) } else { None };
    let created_at = c.u64()?;
    let created_by = c.string()?;
    let expires_at = if c.flag()? { Some(c.u64()?) } else { None };
    let state = match c.variant()? {
        0 => StoredState::Active,
        1 => StoredState::Revoked {
            at: c.u64()?,
            by: c.string()?,
            reason: if c.flag()? { Some(c.string()?) } else { None },
        },
        _ => return None,
    };
    let verifier = c.array()?;
    c.0.is_empty().then_some(RefreshRecord {
        id,
        org,
        user,
        role_at_issue,
        scopes,
        label,
        created_at,
        created_by,
        expires_at,
        state,
        verifier,
    })
}

/// Decodes an access record (as `decode`, faster).
pub(crate) fn decode_access(bytes: &[u8]) -> Result<AccessRecord> {
    match fast_access(bytes) {
        Some(a) => Ok(a),
        None => decode(bytes, "access"),
    }
}

/// Decodes a refresh record (as `decode`, faster).
pub(crate) fn decode_refresh(bytes: &[u8]) -> Result<RefreshRecord> {
    match fast_refresh(bytes) {
        Some(r) => Ok(r),
        None => decode(bytes, "refresh"),
    }
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
        RecordType::Refresh => encode(&decode::<RefreshRecord>(bytes, "refresh")?),
        RecordType::Access => encode(&decode::<AccessRecord>(bytes, "access")?),
        RecordType::Event => encode(&decode::<EventRecord>(bytes, "event")?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_damage() {
        let m = MemberRecord {
            org: "acme".into(),
            user: "ann".into(),
            role: Role::Admin,
            not_before: 5,
        };
        let b = encode(&m).unwrap();
        assert_eq!(decode::<MemberRecord>(&b, "member").unwrap(), m);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(decode::<MemberRecord>(&bad, "member").is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(decode::<MemberRecord>(&long, "member").is_err());
        assert!(decode::<MemberRecord>(&b[..b.len() - 1], "member").is_err());
        assert!(decode::<MemberRecord>(&[], "member").is_err());
    }

    fn sample_refresh(i: u64) -> RefreshRecord {
        let pick =
            |n: u64| ["", "a", "acme", "ü-ñ", "x".repeat(300).leak(), "user-42"][(n % 6) as usize];
        RefreshRecord {
            id: [i as u8; 16],
            org: pick(i).into(),
            user: pick(i / 6).into(),
            role_at_issue: Role::ALL[(i % 4) as usize],
            scopes: (0..i % 5).map(|k| pick(k + i).to_string()).collect(),
            label: i.is_multiple_of(3).then(|| pick(i / 2).into()),
            created_at: [0, 250, 251, 65_535, 65_536, u32::MAX as u64 + 1, u64::MAX]
                [(i % 7) as usize],
            created_by: pick(i / 3).into(),
            expires_at: i
                .is_multiple_of(2)
                .then_some(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            state: if i % 4 == 1 {
                StoredState::Revoked {
                    at: i * 1_000,
                    by: pick(i).into(),
                    reason: (i % 8 == 1).then(|| pick(i + 1).into()),
                }
            } else {
                StoredState::Active
            },
            verifier: [(i * 7) as u8; 32],
        }
    }

    fn sample_access(i: u64) -> AccessRecord {
        AccessRecord {
            id: [i as u8; 16],
            refresh_id: [(i >> 8) as u8; 16],
            issued_at: [0, 250, 251, 65_535, 65_536, u32::MAX as u64 + 1, u64::MAX]
                [(i % 7) as usize],
            expires_at: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            revoked: i.is_multiple_of(2),
            verifier: [(i * 3) as u8; 32],
        }
    }

    /// The fast readers give the record back, and on damaged bytes either
    /// refuse (the caller then asks serde) or agree with serde exactly.
    #[test]
    fn fast_readers_agree_with_serde() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut checked = 0;
        for i in 0..400u64 {
            let r = sample_refresh(i);
            let a = sample_access(i);
            let rb = encode(&r).unwrap();
            let ab = encode(&a).unwrap();
            assert_eq!(fast_refresh(&rb).as_ref(), Some(&r), "refresh {i}");
            assert_eq!(fast_access(&ab).as_ref(), Some(&a), "access {i}");
            assert_eq!(decode_refresh(&rb).unwrap(), r);
            assert_eq!(decode_access(&ab).unwrap(), a);
            for _ in 0..40 {
                for (bytes, is_refresh) in [(&rb, true), (&ab, false)] {
                    let mut m = bytes.clone();
                    match next() % 4 {
                        0 => {
                            let k = next() as usize % m.len();
                            m[k] = next() as u8;
                        }
                        1 => m.truncate(next() as usize % m.len()),
                        2 => m.push(next() as u8),
                        _ => {
                            let k = next() as usize % m.len();
                            m[k] = [0, 1, 250, 251, 252, 253, 254, 255][(next() % 8) as usize];
                        }
                    }
                    if is_refresh {
                        if let Some(f) = fast_refresh(&m) {
                            assert_eq!(decode::<RefreshRecord>(&m, "refresh").ok(), Some(f));
                            checked += 1;
                        }
                        assert_eq!(
                            decode_refresh(&m).ok(),
                            decode::<RefreshRecord>(&m, "refresh").ok()
                        );
                    } else {
                        if let Some(f) = fast_access(&m) {
                            assert_eq!(decode::<AccessRecord>(&m, "access").ok(), Some(f));
                            checked += 1;
                        }
                        assert_eq!(
                            decode_access(&m).ok(),
                            decode::<AccessRecord>(&m, "access").ok()
                        );
                    }
                }
            }
        }
        // Damage that still decodes happens (a changed byte of an id, a
        // string, a time): the agreement above was really exercised.
        assert!(checked > 1_000, "{checked}");
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // version, then a string length of u64::MAX in varint form.
        let bytes = [1u8, 253, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<MemberRecord>(&bytes, "member").is_err());
    }
}
