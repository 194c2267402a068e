//! `Serialize`/`Deserialize` that a derive cannot say (cargo feature
//! `serde`): a [`TokenId`] as its 32 hex digits, [`Scopes`] as their
//! names, an [`IssuedToken`] without its secret.
//!
//! No secret serializes implicitly: [`SecretToken`](crate::SecretToken) and
//! [`AccessGrant`](crate::AccessGrant) have no `Serialize`, and an
//! [`IssuedToken`] shows its secret only through
//! [`IssuedToken::showing_secret`], the one deliberate way to put it in a
//! response.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::{IssuedToken, Scopes, TokenId, TokenInfo};

impl Serialize for TokenId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TokenId, D::Error> {
        struct Hex;
        impl Visitor<'_> for Hex {
            type Value = TokenId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token id: 32 hexadecimal digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenId, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(Hex)
    }
}

/// The granted scope names, as a list (the policy's order).
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = self.to_vec();
        let mut seq = s.serialize_seq(Some(names.len()))?;
        for n in &names {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

/// An issued token without its secret: exactly its [`TokenInfo`]. To show
/// the secret (the one response that does, right after issuing), serialize
/// [`IssuedToken::showing_secret`] instead.
impl Serialize for IssuedToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.info.serialize(s)
    }
}

impl IssuedToken {
    /// The one deliberate way to serialize the secret: the token's
    /// [`TokenInfo`] fields and `"token"`, the refresh token text, for the
    /// response that hands a new token to its holder. Cargo feature
    /// `serde`. Its `Debug` does not show the secret.
    ///
    /// ```
    /// use tokenvault::{Actor, Role, TokenStore};
    /// let store = TokenStore::temporary()?;
    /// store.add_member("acme", "ann", Role::Owner)?;
    /// let t = store.generate(&Actor::new("acme", "ann"), Default::default())?;
    /// // Serialized as is, the token has no secret in it...
    /// let plain = serde_json::to_value(&t)?;
    /// assert!(plain.get("token").is_none());
    /// assert_eq!(plain["id"], t.info.id.to_string());
    /// // ...only through this wrapper.
    /// let shown = serde_json::to_value(t.showing_secret())?;
    /// assert_eq!(shown["token"], t.token.expose());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn showing_secret(&self) -> ShowingSecret<'_> {
        ShowingSecret(self)
    }
}

/// An [`IssuedToken`] that serializes with its secret (from
/// [`IssuedToken::showing_secret`]): its [`TokenInfo`] fields and
/// `"token"`.
#[derive(Clone, Copy)]
pub struct ShowingSecret<'a>(&'a IssuedToken);

impl fmt::Debug for ShowingSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShowingSecret")
            .field("info", &self.0.info)
            .finish_non_exhaustive()
    }
}

impl Serialize for ShowingSecret<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The info's own fields, then the secret: through a JSON-like map
        // so that the two sit side by side.
        #[derive(Serialize)]
        struct Both<'a> {
            #[serde(flatten)]
            info: &'a TokenInfo,
            token: &'a str,
        }
        Both {
            info: &self.0.info,
            token: self.0.token.expose(),
        }
        .serialize(s)
    }
}
