//! Without the `postgres` feature every store is embedded: the hooks that
//! `replicated.rs` gives a shared store are no-ops here.

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::read::Reach;
use super::{Catalog, Inner};
use crate::error::{Error, Result};

/// Never inhabited: there is no replica to hold.
pub(crate) enum Replica {}

pub(super) type CatalogGuard<'a> = RwLockWriteGuard<'a, Catalog>;

/// Issuing a token only reads the catalog: concurrent issues write their
/// records side by side.
pub(super) type IssueCatalog<'a> = RwLockReadGuard<'a, Catalog>;

impl Inner {
    #[inline(always)]
    pub(super) fn ensure_access(
        &self,
        _id: &[u8; 16],
        _checksum_ok: impl FnOnce() -> bool,
        _reach: Reach,
    ) -> Result<bool> {
        Ok(true)
    }

    #[inline(always)]
    pub(super) fn read_failed(&self, e: Error) -> Error {
        e
    }

    #[inline(always)]
    pub(super) fn ensure_refresh(&self, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(super) fn lock_catalog_for_write(&self) -> Result<CatalogGuard<'_>> {
        Ok(self.mem.catalog_write())
    }

    #[inline(always)]
    pub(super) fn lock_catalog_for_issue(&self) -> Result<IssueCatalog<'_>> {
        Ok(self.mem.catalog_read())
    }

    #[inline(always)]
    pub(super) fn lock_catalog_for_read(&self) -> Result<RwLockReadGuard<'_, Catalog>> {
        Ok(self.mem.catalog_read())
    }

    #[inline(always)]
    pub(super) fn find_refresh(&self, _cat: &mut Catalog, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }
}
