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

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // version, then a string length of u64::MAX in varint form.
        let bytes = [1u8, 253, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<MemberRecord>(&bytes, "member").is_err());
    }
}
