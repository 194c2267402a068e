//! Verification measured the way a service meets it: many distinct tokens
//! in random order, not a few that sit in the CPU cache, beside the
//! yardsticks of the same work (the hardware's limit, a hash-map floor, a
//! JWT and a PASETO over as many distinct tokens).
//!
//! Every contender reads the same token texts in the same order: the texts
//! live in one flat buffer of fixed-length entries, and an order is a
//! shuffled list of indices into it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokenvault::TokenKind;

/// Token texts of one length, back to back in one buffer (no pointer to
/// chase per token beyond the buffer itself).
#[derive(Debug, Default)]
pub struct Texts {
    blob: Vec<u8>,
    len: usize,
}

impl Texts {
    /// Appends a token text; every text of one `Texts` has the same length.
    pub fn push(&mut self, text: &str) {
        if self.len == 0 {
            self.len = text.len();
        }
        assert_eq!(
            text.len(),
            self.len,
            "token texts of one kind share a length"
        );
        self.blob.extend_from_slice(text.as_bytes());
    }

    /// The `i`th text.
    pub fn get(&self, i: usize) -> &str {
        let b = &self.blob[i * self.len..(i + 1) * self.len];
        // Only ASCII token texts are pushed.
        std::str::from_utf8(b).expect("token texts are ASCII")
    }

    pub fn len(&self) -> usize {
        self.blob.len().checked_div(self.len).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state of a small xorshift generator: the orders depend only on the
/// seed, so two processes given the same seed visit tokens in one order.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `0..n` in a random order fixed by `seed`.
pub fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        v.swap(i, (xorshift(&mut s) % (i as u64 + 1)) as usize);
    }
    v
}

/// `m` distinct indices of `0..n` in a random order fixed by `seed`.
pub fn random_subset(n: usize, m: usize, seed: u64) -> Vec<u32> {
    let mut v = shuffled(n, seed);
    v.truncate(m.min(n));
    v
}

/// Asks the kernel for 2 MiB pages under a large allocation (Linux's
/// transparent huge pages in `madvise` mode give them only when asked).
/// A hint: when refused, the table works on 4 KiB pages.
pub fn advise_huge_pages<T>(v: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + std::mem::size_of_val(v);
        let first = start.div_ceil(HUGE) * HUGE;
        if end > first + HUGE {
            let len = (end - first) / HUGE * HUGE;
            // SAFETY: the range lies inside `v`'s allocation, which outlives
            // the call; MADV_HUGEPAGE changes no content, only how it is
            // backed.
            unsafe {
                libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// One 64-byte slot of the limit's table: a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Slot {
    verifier: [u8; 32],
    rest: [u8; 32],
}

/// The hardware's limit for a stored, revocable token: parse the text and
/// check its checksum, one keyed blake3 of the secret, one read of a
/// 64-byte slot chosen by the id in a flat table as large as the store,
/// and a constant-time compare. Nothing else: no expiry, no parent, no
/// member, no scopes.
pub struct Limit {
    prefix: String,
    key: [u8; 32],
    slots: Vec<Slot>,
}

impl Limit {
    /// A table of `slots` slots holding the verifier of every token of
    /// `access` (a token's slot is its id's first 8 bytes modulo the size).
    pub fn new(prefix: &str, key: [u8; 32], access: &Texts, slots: usize) -> Limit {
        let mut table = vec![
            Slot {
                verifier: [0; 32],
                rest: [0; 32],
            };
            slots.max(1)
        ];
        advise_huge_pages(&table);
        let mut limit = Limit {
            prefix: prefix.to_string(),
            key,
            slots: Vec::new(),
        };
        for i in 0..access.len() {
            let (id, secret) =
                tokenvault::token::decode_raw(prefix, TokenKind::Access, access.get(i))
                    .expect("a valid access token");
            let at = limit.slot_of(&id, table.len());
            table[at].verifier = *blake3::keyed_hash(&key, &secret).as_bytes();
            table[at].rest[..16].copy_from_slice(&id);
        }
        limit.slots = table;
        limit
    }

    fn slot_of(&self, id: &[u8; 16], n: usize) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&id[..8]);
        (u64::from_le_bytes(b) % n as u64) as usize
    }

    /// One verification at the limit: true when the secret matches.
    #[inline(never)]
    pub fn check(&self, text: &str) -> bool {
        let Ok((id, secret)) = tokenvault::token::decode_raw(&self.prefix, TokenKind::Access, text)
        else {
            return false;
        };
        let v = blake3::keyed_hash(&self.key, &secret);
        let slot = &self.slots[self.slot_of(&id, self.slots.len())];
        bool::from(slot.verifier.ct_eq(v.as_bytes()))
    }
}

/// One record of the hash-map floor, held inline in the map: what a
/// straightforward in-memory store of the same tokens would keep.
#[derive(Clone)]
struct FloorRec {
    verifier: [u8; 32],
    parent: [u8; 16],
    org: Arc<str>,
    user: Arc<str>,
    scopes: u64,
    issued_at: u64,
    expires_at: u64,
    revoked_at: u64,
    role: u8,
}

/// The hash-map floor: a `HashMap` keyed by the 16-byte id holding every
/// access and refresh record inline, verified as a plain in-memory store
/// would (parse, look up the access record, keyed blake3 and a
/// constant-time compare, expiry, look up the parent refresh record,
/// revocation, clone the two names for the answer).
pub struct FloorMap {
    prefix: String,
    key: [u8; 32],
    map: HashMap<[u8; 16], FloorRec>,
}

impl FloorMap {
    /// Holds the `refresh[k]`/`access[k]` pairs; `owner(k)` names the pair's
    /// organization and member (names shared per member, as a store would
    /// intern them).
    pub fn new(
        prefix: &str,
        key: [u8; 32],
        refresh: &Texts,
        access: &Texts,
        mut owner: impl FnMut(usize) -> (Arc<str>, Arc<str>),
    ) -> FloorMap {
        let mut map = HashMap::with_capacity(refresh.len() + access.len());
        let now = 1_780_000_000u64;
        for k in 0..refresh.len().min(access.len()) {
            let (org, user) = owner(k);
            let (rid, rsecret) =
                tokenvault::token::decode_raw(prefix, TokenKind::Refresh, refresh.get(k))
                    .expect("a valid refresh token");
            let (aid, asecret) =
                tokenvault::token::decode_raw(prefix, TokenKind::Access, access.get(k))
                    .expect("a valid access token");
            map.insert(
                rid,
                FloorRec {
                    verifier: *blake3::keyed_hash(&key, &rsecret).as_bytes(),
                    parent: rid,
                    org: org.clone(),
                    user: user.clone(),
                    scopes: 0b111,
                    issued_at: now,
                    expires_at: 0,
                    revoked_at: 0,
                    role: 1,
                },
            );
            map.insert(
                aid,
                FloorRec {
                    verifier: *blake3::keyed_hash(&key, &asecret).as_bytes(),
                    parent: rid,
                    org,
                    user,
                    scopes: 0b111,
                    issued_at: now,
                    expires_at: u64::MAX,
                    revoked_at: 0,
                    role: 1,
                },
            );
        }
        FloorMap {
            prefix: prefix.to_string(),
            key,
            map,
        }
    }

    /// Records held (access and refresh together).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// One verification: the answer's names when the token is good.
    #[inline(never)]
    pub fn check(&self, text: &str, now: u64) -> Option<(Arc<str>, Arc<str>, u64)> {
        let (id, secret) =
            tokenvault::token::decode_raw(&self.prefix, TokenKind::Access, text).ok()?;
        let rec = self.map.get(&id)?;
        let v = blake3::keyed_hash(&self.key, &secret);
        if !bool::from(rec.verifier.ct_eq(v.as_bytes())) {
            return None;
        }
        if rec.expires_at <= now || rec.revoked_at != 0 {
            return None;
        }
        let parent = self.map.get(&rec.parent)?;
        if parent.revoked_at != 0 || (parent.expires_at != 0 && parent.expires_at <= now) {
            return None;
        }
        // The effective scopes: the token's, within its member's role.
        const ROLE_SCOPES: [u64; 4] = [0b1, 0b111, 0b1111_1111, u64::MAX];
        Some((
            rec.org.clone(),
            rec.user.clone(),
            rec.scopes & ROLE_SCOPES[usize::from(rec.role & 3)],
        ))
    }
}

/// The claims of the JWT yardsticks: what `verify` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct FastClaims {
    pub sub: String,
    pub org: String,
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
}

/// `n` distinct HS256 JWTs and the fastest validation found for them with
/// jsonwebtoken: signature and `exp` only (no audience, issuer or
/// not-before checks to run, `exp` the only required claim).
pub struct JwtSet {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    pub tokens: Vec<String>,
}

impl JwtSet {
    pub fn new(n: usize) -> JwtSet {
        let secret = [7u8; 32];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let enc = jsonwebtoken::EncodingKey::from_secret(&secret).expect("key");
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let tokens = (0..n)
            .map(|i| {
                let claims = FastClaims {
                    sub: format!("user{:03}", i % 50),
                    org: format!("org{:05}", i / 5_000),
                    scope: "read squad-read incident-write".into(),
                    iat: now,
                    exp: now + 3600 + (i % 600) as u64,
                };
                jsonwebtoken::encode(&header, &claims, &enc).expect("encodes")
            })
            .collect();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_aud = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        JwtSet {
            key: jsonwebtoken::DecodingKey::from_secret(&secret).expect("key"),
            validation,
            tokens,
        }
    }

    #[inline(never)]
    pub fn check(&self, i: usize) -> bool {
        jsonwebtoken::decode::<FastClaims>(&self.tokens[i], &self.key, &self.validation).is_ok()
    }
}

/// `n` distinct PASETO v4.local tokens (pasetors) with the same claims,
/// decrypted and their claims validated (expiry, not-before, issued-at).
pub struct PasetoSet {
    key: pasetors::keys::SymmetricKey<pasetors::version4::V4>,
    rules: pasetors::claims::ClaimsValidationRules,
    pub tokens: Vec<String>,
}

impl PasetoSet {
    pub fn new(n: usize) -> PasetoSet {
        use pasetors::keys::Generate;
        let key =
            pasetors::keys::SymmetricKey::<pasetors::version4::V4>::generate().expect("a key");
        let tokens = (0..n)
            .map(|i| {
                let mut claims = pasetors::claims::Claims::new().expect("claims");
                claims.subject(&format!("user{:03}", i % 50)).expect("sub");
                claims
                    .add_additional("org", format!("org{:05}", i / 5_000))
                    .expect("org");
                claims
                    .add_additional("scope", "read squad-read incident-write")
                    .expect("scope");
                pasetors::local::encrypt(&key, &claims, None, None).expect("encrypts")
            })
            .collect();
        PasetoSet {
            key,
            rules: pasetors::claims::ClaimsValidationRules::new(),
            tokens,
        }
    }

    #[inline(never)]
    pub fn check(&self, i: usize) -> bool {
        let Ok(untrusted) = pasetors::token::UntrustedToken::<
            pasetors::Local,
            pasetors::version4::V4,
        >::try_from(self.tokens[i].as_str()) else {
            return false;
        };
        pasetors::local::decrypt(&self.key, &untrusted, &self.rules, None, None).is_ok()
    }
}
