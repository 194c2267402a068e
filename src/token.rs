//! The token format: `<prefix><kind>_<base62(id ‖ secret)><base62(checksum)>`.
//!
//! * `kind` is `r` for a refresh token and `a` for an access token, so with the
//!   default prefix `tv` tokens start `tvr_` and `tva_`;
//! * the payload is a 16-byte public id followed by a 32-byte secret, written
//!   in base62 eight bytes at a time (each 8-byte big-endian chunk becomes 11
//!   base62 digits, so the payload is always 66 characters and every token has
//!   exactly one spelling);
//! * the checksum is the first 4 bytes of blake3 over `prefix ‖ kind ‖
//!   payload bytes`, as 6 base62 digits, so a typo or a secret scanner's false
//!   hit is rejected without a store lookup.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::TryRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, IoError, Result};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHUNK_DIGITS: usize = 11;
pub(crate) const PAYLOAD_LEN: usize = 48;
const PAYLOAD_DIGITS: usize = PAYLOAD_LEN / 8 * CHUNK_DIGITS;
const CHECK_DIGITS: usize = 6;
/// Longest prefix a store accepts.
pub(crate) const MAX_PREFIX: usize = 16;

/// The kind of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum TokenKind {
    /// A long-lived refresh token (`…r_`).
    Refresh,
    /// A short-lived access token (`…a_`).
    Access,
}

impl TokenKind {
    fn letter(self) -> u8 {
        match self {
            TokenKind::Refresh => b'r',
            TokenKind::Access => b'a',
        }
    }
}

/// The public id of a token: 16 random bytes, shown as 32 lowercase hex
/// digits. Safe to log and to show in lists; it grants nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub(crate) [u8; 16]);

impl TokenId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// An id from raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        TokenId(bytes)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

impl FromStr for TokenId {
    type Err = Error;
    /// Parses 32 hex digits (either case).
    fn from_str(s: &str) -> Result<TokenId> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(Error::InvalidArgument(
                "a token id is 32 hexadecimal digits".into(),
            ));
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => {
                    return Err(Error::InvalidArgument(
                        "a token id is 32 hexadecimal digits".into(),
                    ))
                }
            }
        }
        Ok(TokenId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A token string that carries a secret. Shown once, never logged: its
/// `Debug` output is redacted and its memory is wiped when dropped.
///
/// ```
/// # let store = tokenvault::TokenStore::temporary()?;
/// # store.add_member("acme", "ann", tokenvault::Role::Owner)?;
/// let issued = store.generate(&tokenvault::Actor::new("acme", "ann"), Default::default())?;
/// assert!(!format!("{:?}", issued.token).contains(issued.token.expose()));
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretToken(String);

impl SecretToken {
    /// The token text, to hand to its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_str_unchecked(s: &str) -> Self {
        SecretToken(s.to_string())
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint: String = self.0.chars().take(4).collect();
        write!(f, "SecretToken({hint}…redacted)")
    }
}

/// 32 secret bytes, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret(pub(crate) [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A token string taken apart.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) id: TokenId,
    pub(crate) secret: Secret,
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn os_random(buf: &mut [u8]) -> Result<()> {
    rand::rngs::OsRng.try_fill_bytes(buf).map_err(|e| {
        Error::Io(IoError::with_source(
            format!("the operating system's random source failed: {e}"),
            e,
        ))
    })
}

/// A new random id and secret, from the operating system.
pub(crate) fn random_id_and_secret() -> Result<(TokenId, Secret)> {
    let mut buf = [0u8; PAYLOAD_LEN];
    os_random(&mut buf)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[..16]);
    let mut secret = Secret([0u8; 32]);
    secret.0.copy_from_slice(&buf[16..]);
    buf.zeroize();
    Ok((TokenId(id), secret))
}

/// The next number in this process's order of access-token issues (see
/// [`stamp_issue_order`]): the time, in microseconds since the Unix epoch,
/// or one more than the last number if that is not earlier (two issues in
/// one microsecond, or a clock stepped back). So it grows with every issue,
/// also across a restart (unless the clock went back meanwhile), and tells
/// no more than when the token was issued. 56 bits.
fn next_issue_order() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    const MASK: u64 = (1 << 56) - 1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u128::from(MASK)) as u64);
    let next = |last: u64| now.max(last.saturating_add(1)).min(MASK);
    let last = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .unwrap_or_else(|last| last);
    next(last)
}

/// Writes into an access id, whose other bytes are random, its place in
/// this process's order of issue: bytes 1 to 7 (see [`issue_order`]). A
/// family's access records say when they were issued to the second only;
/// this tells which of a second's came first, so that the cap evicts the
/// oldest. The exchange stamps the id under the family's lock, so that a
/// family's records are also written in that order. The id is not secret
/// (the secret is); its 9 other bytes, those that place it in memory's
/// tables and shards, stay random.
pub(crate) fn stamp_issue_order(id: &mut TokenId) {
    id.0[1..8].copy_from_slice(&next_issue_order().to_be_bytes()[1..]);
}

/// An access id's place in the order of issues within its second (see
/// [`stamp_issue_order`]; for an id made before it, a number of no
/// meaning, as good as any to break a tie).
pub(crate) fn issue_order(id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b[1..].copy_from_slice(&id[1..8]);
    u64::from_be_bytes(b)
}

/// Whether `prefix` is acceptable: 1 to 16 ASCII lowercase letters or digits.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::InvalidArgument(format!(
            "token prefix `{prefix}` must be 1 to {MAX_PREFIX} lowercase ASCII letters or digits"
        )));
    }
    Ok(())
}

fn checksum(prefix: &str, kind: TokenKind, payload: &[u8; PAYLOAD_LEN]) -> u32 {
    let p = prefix.len();
    let out = if p <= MAX_PREFIX {
        // One-shot hashing of a stack buffer is cheaper than the
        // incremental hasher; the buffer holds the secret, so wipe it.
        let mut buf = [0u8; MAX_PREFIX + 1 + PAYLOAD_LEN];
        buf[..p].copy_from_slice(prefix.as_bytes());
        buf[p] = kind.letter();
        buf[p + 1..p + 1 + PAYLOAD_LEN].copy_from_slice(payload);
        let out = blake3::hash(&buf[..p + 1 + PAYLOAD_LEN]);
        buf.zeroize();
        out
    } else {
        let mut h = blake3::Hasher::new();
        h.update(prefix.as_bytes());
        h.update(&[kind.letter()]);
        h.update(payload);
        h.finalize()
    };
    let b = out.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn push_digits(out: &mut Vec<u8>, mut v: u64, n: usize) {
    let mut buf = [0u8; CHUNK_DIGITS];
    for digit in buf[..n].iter_mut().rev() {
        *digit = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    out.extend_from_slice(&buf[..n]);
}

/// Base62 digit values by byte; `INVALID` for bytes outside the alphabet.
const INVALID: u8 = 0xff;
const DIGITS: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Reads at most 11 base62 digits; `None` for a byte outside the alphabet
/// or a value beyond `u64`.
fn read_digits(s: &[u8]) -> Option<u64> {
    let (&last, head) = s.split_last()?;
    debug_assert!(head.len() < CHUNK_DIGITS);
    // Ten digits stay below 64^10 = 2^60 even with invalid bytes masked to
    // six bits, so only the last step can overflow.
    let mut v: u64 = 0;
    let mut bad = 0u8;
    for &c in head {
        let d = DIGITS[c as usize];
        bad |= d;
        v = v * 62 + u64::from(d & 63);
    }
    let d = DIGITS[last as usize];
    if (bad | d) & 0x80 != 0 {
        return None;
    }
    v.checked_mul(62)?.checked_add(u64::from(d))
}

/// Writes a token.
pub(crate) fn encode(prefix: &str, kind: TokenKind, id: &TokenId, secret: &Secret) -> SecretToken {
    let mut payload = [0u8; PAYLOAD_LEN];
    payload[..16].copy_from_slice(&id.0);
    payload[16..].copy_from_slice(&secret.0);
    let mut out = Vec::with_capacity(prefix.len() + 2 + PAYLOAD_DIGITS + CHECK_DIGITS);
    out.extend_from_slice(prefix.as_bytes());
    out.push(kind.letter());
    out.push(b'_');
    for chunk in payload.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        push_digits(&mut out, u64::from_be_bytes(b), CHUNK_DIGITS);
    }
    push_digits(
        &mut out,
        checksum(prefix, kind, &payload) as u64,
        CHECK_DIGITS,
    );
    payload.zeroize();
    // A `str` prefix followed by ASCII: always UTF-8 (the fallback only
    // keeps this free of a panic path).
    let text = match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => {
            let mut bytes = e.into_bytes();
            let s = String::from_utf8_lossy(&bytes).into_owned();
            bytes.zeroize();
            s
        }
    };
    SecretToken(text)
}

/// The length of every token with this prefix.
pub(crate) fn token_len(prefix: &str) -> usize {
    prefix.len() + 2 + PAYLOAD_DIGITS + CHECK_DIGITS
}

/// A token taken apart whose checksum digits were read but not yet
/// compared (see [`parse_unchecked`]).
pub(crate) struct Unchecked {
    pub(crate) parsed: Parsed,
    /// The checksum the token carries (six base62 digits may exceed u32).
    pub(crate) claimed: u64,
}

/// The verify rule, stated once: a token is checked for its checksum
/// first, so a typo or a secret scanner's false hit is `Malformed` before
/// anything is said about its id or its secret (and never costs a lookup
/// elsewhere). [`parse`] applies it at once; verification, which reads
/// memory first, applies it through [`Unchecked::checksum_ok`] and, once
/// the secret matched, through [`Unchecked::checksum_ok_memo`], which keeps
/// the right checksum of a token in a memo so that later checks compare
/// instead of hashing.
impl Unchecked {
    /// Whether the checksum the token carries is right (hashes).
    pub(crate) fn checksum_ok(&self, prefix: &str, kind: TokenKind) -> bool {
        self.claimed == u64::from(self.expected(prefix, kind))
    }

    /// [`Unchecked::checksum_ok`] for a token whose secret matched a stored
    /// verifier: `memo` (its low 32 bits zero at first) keeps that token's
    /// right checksum in its low 32 bits once it is known, so that only the
    /// first check hashes (a token whose right checksum is 0, one in four
    /// billion, is hashed at every check instead). Bits above the low 32
    /// are the caller's and left as they are.
    pub(crate) fn checksum_ok_memo(&self, prefix: &str, kind: TokenKind, memo: &AtomicU64) -> bool {
        let known = memo.load(Ordering::Relaxed) as u32;
        let expected = if known != 0 {
            known
        } else {
            let e = self.expected(prefix, kind);
            // ORed in: the memo's word may carry other bits above these
            // (an access entry's state), and nothing else sets these.
            memo.fetch_or(u64::from(e), Ordering::Relaxed);
            e
        };
        self.claimed == u64::from(expected)
    }

    /// The checksum a token with this id and secret must carry.
    pub(crate) fn expected(&self, prefix: &str, kind: TokenKind) -> u32 {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..16].copy_from_slice(&self.parsed.id.0);
        payload[16..].copy_from_slice(&self.parsed.secret.0);
        let c = checksum(prefix, kind, &payload);
        payload.zeroize();
        c
    }
}

/// Takes a token apart; any deviation from the format is `Malformed`.
pub(crate) fn parse(prefix: &str, kind: TokenKind, token: &str) -> Result<Parsed> {
    let u = parse_unchecked(prefix, kind, token)?;
    if !u.checksum_ok(prefix, kind) {
        return Err(Error::Malformed("checksum mismatch"));
    }
    Ok(u.parsed)
}

/// [`parse`] without the final checksum comparison, for a caller that
/// knows the right checksum without hashing (verification, for a token it
/// has seen before) and compares it itself.
pub(crate) fn parse_unchecked(prefix: &str, kind: TokenKind, token: &str) -> Result<Unchecked> {
    let t = token.as_bytes();
    if t.len() != token_len(prefix) {
        return Err(Error::Malformed("wrong length"));
    }
    let p = prefix.len();
    if &t[..p] != prefix.as_bytes() {
        return Err(Error::Malformed("wrong prefix"));
    }
    if t[p] != kind.letter() {
        return Err(Error::Malformed("wrong kind of token"));
    }
    if t[p + 1] != b'_' {
        return Err(Error::Malformed("missing separator"));
    }
    let body = &t[p + 2..];
    let mut payload = [0u8; PAYLOAD_LEN];
    for (i, digits) in body[..PAYLOAD_DIGITS]
        .chunks_exact(CHUNK_DIGITS)
        .enumerate()
    {
        let Some(v) = read_digits(digits) else {
            payload.zeroize();
            return Err(Error::Malformed("not base62"));
        };
        payload[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    let Some(claimed) = read_digits(&body[PAYLOAD_DIGITS..]) else {
        payload.zeroize();
        return Err(Error::Malformed("not base62"));
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&payload[..16]);
    let mut secret = Secret([0u8; 32]);
    secret.0.copy_from_slice(&payload[16..]);
    payload.zeroize();
    Ok(Unchecked {
        parsed: Parsed {
            id: TokenId(id),
            secret,
        },
        claimed,
    })
}

/// Parses any token of the given prefix, telling its kind. Used by the fuzz
/// target and by callers that accept either kind.
///
/// # Errors
/// [`Error::Malformed`] for anything that is not a token of this format.
///
/// ```
/// use tokenvault::token::{inspect, TokenKind};
/// assert!(inspect("tv", "tvr_nonsense").is_err());
/// # let _ = TokenKind::Refresh;
/// ```
pub fn inspect(prefix: &str, token: &str) -> Result<(TokenKind, TokenId)> {
    let t = token.as_bytes();
    let kind = match t.get(prefix.len()) {
        Some(b'r') => TokenKind::Refresh,
        Some(b'a') => TokenKind::Access,
        _ => return Err(Error::Malformed("wrong kind of token")),
    };
    parse(prefix, kind, token).map(|p| (kind, p.id))
}

/// Builds a token from raw parts (for tests and fuzzing: it lets a caller
/// check that every valid token round-trips).
#[doc(hidden)]
pub fn encode_raw(prefix: &str, kind: TokenKind, id: [u8; 16], secret: [u8; 32]) -> String {
    encode(prefix, kind, &TokenId(id), &Secret(secret))
        .0
        .clone()
}

/// The public pieces of a parsed token, for tests and fuzzing.
#[doc(hidden)]
pub fn decode_raw(prefix: &str, kind: TokenKind, token: &str) -> Result<([u8; 16], [u8; 32])> {
    let p = parse(prefix, kind, token)?;
    Ok((p.id.0, p.secret.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Access ids carry the order they were made in (bytes 1 to 7, read
    /// back by `issue_order`), from any thread; their other bytes, which
    /// place them in memory's tables and shards, are random.
    #[test]
    fn access_ids_carry_their_order_of_issue() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let stamped = || {
            let mut id = random_id_and_secret().unwrap().0;
            stamp_issue_order(&mut id);
            id.0
        };
        let ids: Vec<[u8; 16]> = (0..64).map(|_| stamped()).collect();
        for w in ids.windows(2) {
            assert!(issue_order(&w[0]) < issue_order(&w[1]), "{w:?}");
        }
        // The time of issue in microseconds (or just after the last).
        assert!(issue_order(&ids[0]) >= before);
        let other = std::thread::spawn(stamped).join().unwrap();
        assert!(issue_order(&other) > issue_order(&ids[63]));
        let firsts: std::collections::HashSet<u8> = ids.iter().map(|i| i[0]).collect();
        let placing: std::collections::HashSet<[u8; 8]> =
            ids.iter().map(|i| i[8..].try_into().unwrap()).collect();
        assert!(firsts.len() > 16, "byte 0 is random");
        assert_eq!(placing.len(), ids.len(), "bytes 8 to 15 are random");
        // An id made before the order existed reads as any number.
        let mut old = [0u8; 16];
        old[1..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(issue_order(&old), 0x0001_0203_0405_0607);
    }

    #[test]
    fn round_trip_and_fixed_length() {
        let (id, secret) = random_id_and_secret().unwrap();
        let t = encode("tv", TokenKind::Refresh, &id, &secret);
        assert!(t.expose().starts_with("tvr_"));
        assert_eq!(t.expose().len(), token_len("tv"));
        let p = parse("tv", TokenKind::Refresh, t.expose()).unwrap();
        assert_eq!(p.id, id);
        assert_eq!(p.secret.0, secret.0);
        assert!(parse("tv", TokenKind::Access, t.expose()).is_err());
    }

    #[test]
    fn extremes_round_trip() {
        for (id, s) in [([0u8; 16], [0u8; 32]), ([0xff; 16], [0xff; 32])] {
            let t = encode_raw("tv", TokenKind::Access, id, s);
            assert_eq!(decode_raw("tv", TokenKind::Access, &t).unwrap(), (id, s));
        }
    }

    #[test]
    fn one_changed_character_is_caught() {
        let t = encode_raw("tv", TokenKind::Refresh, [7; 16], [9; 32]);
        let mut b = t.into_bytes();
        let i = 30;
        b[i] = if b[i] == b'x' { b'y' } else { b'x' };
        let s = String::from_utf8(b).unwrap();
        assert!(matches!(
            parse("tv", TokenKind::Refresh, &s),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn overflowing_chunk_is_rejected() {
        let t = encode_raw("tv", TokenKind::Refresh, [0xff; 16], [0xff; 32]);
        let mut b = t.into_bytes();
        b[4..15].copy_from_slice(b"zzzzzzzzzzz");
        let s = String::from_utf8(b).unwrap();
        assert!(parse("tv", TokenKind::Refresh, &s).is_err());
    }

    /// The digit reader agrees with plain checked arithmetic on valid,
    /// invalid and overflowing inputs.
    #[test]
    fn digit_reader_matches_reference() {
        fn reference(s: &[u8]) -> Option<u64> {
            let mut v: u64 = 0;
            for &c in s {
                let d = ALPHABET.iter().position(|&a| a == c)? as u64;
                v = v.checked_mul(62)?.checked_add(d)?;
            }
            Some(v)
        }
        let mut cases: Vec<Vec<u8>> = vec![
            b"00000000000".to_vec(),
            b"zzzzzzzzzzz".to_vec(),
            b"LygHa16AHYF".to_vec(),
            b"LygHa16AHYG".to_vec(),
            b"zzzzzz".to_vec(),
            b"0000000000{".to_vec(),
            b"/0000000000".to_vec(),
            b"000@0000000".to_vec(),
            b"000`0000000".to_vec(),
            vec![0xc3; 11],
        ];
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut c = Vec::new();
            for _ in 0..11 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly alphabet bytes, sometimes anything.
                c.push(if x.is_multiple_of(17) {
                    (x >> 8) as u8
                } else {
                    ALPHABET[(x >> 8) as usize % 62]
                });
            }
            cases.push(c);
        }
        for c in &cases {
            assert_eq!(read_digits(c), reference(c), "{c:?}");
            assert_eq!(read_digits(&c[..6]), reference(&c[..6]), "{c:?}");
        }
        assert_eq!(read_digits(b"LygHa16AHYF"), Some(u64::MAX));
        assert_eq!(read_digits(b"LygHa16AHYG"), None);
    }

    #[test]
    fn id_hex_round_trip() {
        let id = TokenId([0xab; 16]);
        assert_eq!(id.to_string().parse::<TokenId>().unwrap(), id);
        assert!("xyz".parse::<TokenId>().is_err());
        assert!("zz".repeat(16).parse::<TokenId>().is_err());
    }
}
