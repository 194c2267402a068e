//! Without the `postgres` feature every store is embedded: the hooks that
//! `shared.rs` gives a shared store are no-ops here.

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use super::{Catalog, Inner};
use crate::error::Result;

/// Never inhabited: there is no shared backend to hold.
pub(super) enum Slot {}

pub(super) type CatalogGuard<'a> = RwLockWriteGuard<'a, Catalog>;

/// Issuing a token only reads the catalog: concurrent issues write their
/// records side by side.
pub(super) type IssueCatalog<'a> = RwLockReadGuard<'a, Catalog>;

impl Inner {
    #[inline(always)]
    pub(super) fn fresh_access(
        &self,
        _id: &[u8; 16],
        _checksum_ok: impl FnOnce() -> bool,
    ) -> Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(super) fn fresh_refresh(&self, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(super) fn lock_catalog_for_write(&self) -> Result<CatalogGuard<'_>> {
        Ok(self.mem.catalog.write())
    }

    #[inline(always)]
    pub(super) fn lock_catalog_for_issue(&self) -> Result<IssueCatalog<'_>> {
        Ok(self.mem.catalog.read())
    }

    #[inline(always)]
    pub(super) fn lock_for_read(&self) -> Result<CatalogGuard<'_>> {
        Ok(self.mem.catalog.write())
    }

    #[inline(always)]
    pub(super) fn find_refresh(&self, _cat: &mut Catalog, _id: &[u8; 16]) -> Result<()> {
        Ok(())
    }
}
