//! # tokenvault
//!
//! An embedded, in-process store for API refresh tokens, the short-lived
//! access tokens derived from them, and their revocation, with a policy layer
//! for role-restricted tokens and owner assignment — the token flow of
//! Squadcast's public API, as a library a Rust service links in.
//!
//! ```
//! use tokenvault::{Actor, Error, GenerateOptions, Role, TokenStore};
//!
//! let store = TokenStore::temporary()?;
//! // The host keeps membership in sync.
//! store.add_member("acme", "olivia", Role::Owner)?;
//! store.add_member("acme", "uma", Role::User)?;
//! let owner = Actor::new("acme", "olivia");
//!
//! // The Owner assigns a token to a User; the secret is shown once.
//! let issued = store.assign(&owner, "uma", GenerateOptions::default().label("cli"))?;
//!
//! // Uma's client trades it for a short-lived access token...
//! let grant = store.exchange(issued.token.expose())?;
//! // ...which the API verifies on every call, in memory.
//! let who = store.authorize(grant.access_token.expose(), "incident-write")?;
//! assert_eq!(&*who.user, "uma");
//! // Role restricted: a User token never carries Admin scopes.
//! assert!(matches!(
//!     store.authorize(grant.access_token.expose(), "user-write"),
//!     Err(Error::InsufficientScope(_))
//! ));
//!
//! // Revoking the refresh token revokes every access token derived from it.
//! store.revoke(&owner, &issued.info.id, Some("laptop lost"))?;
//! assert!(matches!(store.verify(grant.access_token.expose()), Err(Error::Revoked)));
//! # Ok::<(), tokenvault::Error>(())
//! ```
//!
//! ## What it offers
//! - [`TokenStore`]: one `Clone + Send + Sync` handle, opened from a
//!   [`Config`] (a path or a temporary store).
//! - Membership kept by the host: [`TokenStore::add_member`],
//!   [`TokenStore::set_role`], [`TokenStore::transfer_ownership`],
//!   [`TokenStore::remove_member`].
//! - Refresh tokens: [`TokenStore::generate`] (own), [`TokenStore::assign`]
//!   (the Owner, for another member), [`TokenStore::list_own`],
//!   [`TokenStore::list_org`].
//! - [`TokenStore::exchange`], [`TokenStore::verify`],
//!   [`TokenStore::authorize`]: verification touches no disk.
//! - Revocation with cascade: [`TokenStore::revoke`],
//!   [`TokenStore::revoke_all`] (a member, the org, or before a cutoff),
//!   [`TokenStore::revoke_access`].
//! - [`TokenStore::audit`], [`TokenStore::purge_expired`],
//!   [`TokenStore::check_integrity`], [`TokenStore::stats`].
//! - [`TokenStore::close`] at shutdown, whose [`CloseReport`] says whether
//!   it was the last handle (checkpoint, warm-start files) or how many
//!   remain; [`TokenStore::close_timeout`] waits for them first.
//! - Every call's documentation says whether it blocks and for about how
//!   long. With the cargo feature `tokio`, `AsyncTokenStore`: the same calls
//!   as futures that run the blocking work on tokio's blocking threads
//!   (`docs/async.md`: the whole table, shutdown, errors → HTTP statuses).
//! - With the cargo feature `serde`: `Serialize`/`Deserialize` on the value
//!   types ([`TokenInfo`], [`TokenId`], [`AuditEvent`], [`Role`], ...), names
//!   in lowercase; a secret only through `IssuedToken::showing_secret`.
//! - With the cargo feature `http`: the module `tokenvault::http`, Squadcast's
//!   token endpoints (`GET /oauth/access-token`, `/v3/refresh-token`, RFC 7009
//!   revocation, RFC 7662 introspection) as an axum router, a tower layer and
//!   extractor that guard a host's routes with bearer verification and a
//!   scope check, and a server.
//! - With the cargo feature `metrics`: counters and histograms through the
//!   `metrics` facade (the host installs the recorder; `docs/operations.md`
//!   lists them); with `tls`, HTTPS for the HTTP front (rustls, a
//!   certificate reloadable without dropping connections).
//! - With the cargo feature `postgres`, `Config::postgres`: the same store
//!   in PostgreSQL, shared by several service replicas, each verifying from
//!   its own memory within a staleness bound (see docs/postgres.md).
//!
//! ## Security model in short
//! Secrets are shown once and stored only as a keyed blake3 verifier; no
//! secret reaches disk, a log or `Debug` output. Management calls are checked
//! against the store's own member records. The invariants the tests cite
//! and the policy tables are in `docs/design.md`; see the README and
//! `docs/` (security, durability, disk format) for the whole model.
#![deny(missing_docs, unsafe_code)]
// On docs.rs (`--cfg docsrs`, see `[package.metadata.docs.rs]`), each item
// that a cargo feature gates is marked with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "tokio")]
mod async_store;
mod change;
mod clock;
pub mod codec;
mod commit;
mod config;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod idmap;
mod janitor;
mod member_index;
mod memory;
mod observe;
mod policy;
#[cfg(feature = "postgres")]
mod replica;
#[cfg(feature = "serde")]
mod serde_impls;
mod storage;
mod store;
pub mod token;
mod types;

#[cfg(feature = "tokio")]
pub use async_store::AsyncTokenStore;
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "postgres")]
pub use config::PostgresOptions;
pub use config::{Config, StoreKey};
pub use error::{Error, IoError, Result};
pub use janitor::Janitor;
#[cfg(feature = "metrics")]
pub use observe::describe_metrics;
pub use policy::{Policy, PolicyBuilder, Role};
#[cfg(feature = "postgres")]
pub use replica::SyncStatus;
#[cfg(feature = "serde")]
pub use serde_impls::ShowingSecret;
pub use storage::IntegrityReport;
pub use store::{Grace, OAuthGrant, Page, Paged, RoleChange, Rotated, SyncReport, TokenStore};
pub use token::{SecretToken, TokenId, TokenKind};
pub use types::{
    AccessGrant, Actor, AuditEvent, ClientInfo, CloseReport, GenerateOptions, IssuedToken,
    OrgPolicy, Principal, PurgeReport, RevokeScope, Scopes, Stats, TokenInfo, TokenState,
};
