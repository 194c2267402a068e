//! The read gate: the one way a public read path of [`TokenStore`] reaches
//! the tokens in memory.
//!
//! A call that answers from memory about a presented token (`verify`,
//! `try_verify`, `authorize`, `exchange`, `verify_refresh`, and the
//! revocations by token, `revoke_refresh` and `revoke_access`, hence the
//! HTTP front's introspection and RFC 7009 revocation, and `get` by id)
//! first obtains a [`Fresh`] view from [`Inner::read_access`] or
//! [`Inner::read_refresh`], and looks the token up through that view: memory's token maps are not
//! read by those paths any other way. On an embedded store the gate is
//! empty and inlined (verification stays allocation-free). On a store
//! shared through PostgreSQL it is where the replica
//!
//! 1. fails closed: past its staleness bound, [`Error::Unavailable`];
//! 2. reads a token it does not hold through from the database (once, and
//!    within the replica's read-through budget), or, for a caller that must
//!    not block ([`Reach::Memory`]), reports the miss instead;
//! 3. turns a database error met while reading into [`Error::Unavailable`]:
//!    a read that cannot be answered fails closed, never as an answer
//!    from what memory happened to hold.
//!
//! The read-only management calls (`list_own`, `list_org`, `audit`) take
//! the catalog through the same gate's third door,
//! [`Inner::lock_catalog_for_read`], which catches a replica up first (and
//! fails closed as above).

use super::*;
use crate::memory::AccessHot;

/// How far a read may go for a token memory does not hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Reach {
    /// Memory only: a shared store reports a miss rather than block.
    Memory,
    /// Memory, then the database (blocks on a shared store's miss).
    Database,
}

/// Memory cleared to answer a read about one presented token: on a shared
/// store the replica was within its staleness bound, and the token, if
/// memory lacked it, was read through. Only the gate makes one.
pub(super) struct Fresh<'a> {
    inner: &'a Inner,
}

impl Fresh<'_> {
    /// Runs `f` on the access token `id` as memory holds it.
    #[inline(always)]
    pub(super) fn access_with<R>(
        &self,
        id: &[u8; 16],
        f: impl FnOnce(Option<&AccessHot>) -> R,
    ) -> R {
        self.inner.mem.access_with(id, f)
    }

    /// The scopes the access token `id`, whose entry is `a`, may grant at
    /// most (see `Memory::access_scopes_of`).
    #[inline(always)]
    pub(super) fn access_scopes_of(&self, id: &[u8; 16], a: &AccessHot) -> crate::policy::ScopeSet {
        self.inner.mem.access_scopes_of(id, a)
    }

    /// The refresh token `id` as memory holds it.
    #[inline]
    pub(super) fn refresh(&self, id: &[u8; 16]) -> Option<RefreshArc> {
        self.inner.mem.refresh(id)
    }

    /// The stored record of the refresh token `id` (its label, scopes and
    /// the rest that memory does not keep). Blocks on storage; on a shared
    /// store a database error is [`Error::Unavailable`].
    pub(super) fn refresh_record(&self, id: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        self.inner
            .backend
            .get_refresh(id)
            .map_err(|e| self.inner.read_failed(e))
    }
}

impl Inner {
    /// The gate for a read about the access token `id`; `checksum_ok` says
    /// whether the presented token is well formed (asked only before a
    /// read-through, so garbage never reaches the database). `Ok(None)`
    /// only for [`Reach::Memory`] on a shared store's miss.
    #[inline(always)]
    pub(super) fn read_access(
        &self,
        id: &[u8; 16],
        checksum_ok: impl FnOnce() -> bool,
        reach: Reach,
    ) -> Result<Option<Fresh<'_>>> {
        if self.ensure_access(id, checksum_ok, reach)? {
            Ok(Some(Fresh { inner: self }))
        } else {
            Ok(None)
        }
    }

    /// The gate for a read about the refresh token `id`, after a storage
    /// fault is recovered from (see `recover.rs`). Reads through when memory
    /// lacks it (blocks on a shared store).
    #[inline]
    pub(super) fn read_refresh(&self, id: &[u8; 16]) -> Result<Fresh<'_>> {
        self.recover()?;
        self.ensure_refresh(id)?;
        Ok(Fresh { inner: self })
    }
}

#[cfg(test)]
mod tests {
    /// The read paths' files look tokens up only through the gate's view:
    /// a new read path written beside them that reached memory's token maps
    /// (or the backend's records) directly would skip the replica's
    /// freshness check and read-through, and fails this test.
    #[test]
    fn read_paths_reach_tokens_only_through_the_gate() {
        let revoke = include_str!("revoke.rs");
        let by_token = &revoke[revoke
            .find("pub fn revoke_access")
            .expect("revoke_access is in revoke.rs")..];
        let by_token = &by_token[..by_token.find("\nimpl Inner").unwrap_or(by_token.len())];
        let reads = include_str!("reads.rs");
        let get = &reads[reads.find("pub fn get(").expect("get is in reads.rs")..];
        let get = &get[..get.find("pub fn set_label(").unwrap_or(get.len())];
        for (file, text) in [
            ("verify.rs", include_str!("verify.rs")),
            ("revoke.rs", by_token),
            ("reads.rs", get),
        ] {
            let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            for direct in [
                "mem.access_with(",
                "mem.refresh(",
                "backend.get_refresh(",
                "backend.get_access(",
            ] {
                assert!(
                    !squeezed.contains(direct),
                    "{file} reads `{direct}` directly: go through `Inner::read_access` or \
                     `Inner::read_refresh` and the `Fresh` view"
                );
            }
        }
    }
}
