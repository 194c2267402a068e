//! A store whose storage was let go of after a fault and not opened again yet.

use super::*;

/// A store on disk whose storage was let go of after a fault and could not
/// be opened again yet: every call answers `unavailable`, and
/// [`Backend::reopen`] tries the open again.
pub(super) struct Closed {
    pub(super) path: std::path::PathBuf,
    pub(super) cache_bytes: u64,
}

impl Closed {
    pub(super) fn open_again(self) -> (Box<dyn Backend>, Result<()>) {
        match files::open(Some(&self.path), self.cache_bytes) {
            Ok(b) => (Box::new(b), Ok(())),
            Err(e) => (Box::new(self), Err(e)),
        }
    }

    fn refused<T>(&self) -> Result<T> {
        Err(Error::Unavailable(
            "the storage failed and is being opened again; try again shortly".into(),
        ))
    }
}

impl Backend for Closed {
    fn meta_get(&self, _: &str) -> Result<Option<Vec<u8>>> {
        self.refused()
    }
    fn meta_put(&self, _: &str, _: &[u8]) -> Result<()> {
        self.refused()
    }
    fn load(&self, _: &dyn LoadSink) -> Result<Loaded> {
        self.refused()
    }
    fn commit(&self, _: &[Change]) -> Result<Committed> {
        self.refused()
    }
    fn schema(&self) -> (&'static [u8], &'static [&'static [u8]]) {
        SCHEMA
    }
    fn upgrade(&self, _: &[u8]) -> Result<()> {
        self.refused()
    }
    fn sync(&self) -> Result<()> {
        self.refused()
    }
    fn close(self: Box<Self>) -> Result<CloseDone> {
        Err(Error::Io(
            "the storage failed and could not be opened again; what was not \
             acknowledged as durable is lost"
                .into(),
        ))
    }
    fn get_refresh(&self, _: &[u8; 16]) -> Result<Option<RefreshRecord>> {
        self.refused()
    }
    fn list_refresh(&self, _: &str, _: Option<&str>) -> Result<Vec<RefreshRecord>> {
        self.refused()
    }
    fn family_access(&self, _: &[u8; 16], _: usize) -> Result<Vec<[u8; 16]>> {
        self.refused()
    }
    fn events(&self, _: &str, _: u64, _: usize) -> Result<Vec<EventRecord>> {
        self.refused()
    }
    fn put_event(&self, _: &EventRecord, _: Option<u64>) -> Result<u64> {
        self.refused()
    }
    fn purge_events(&self, _: u64, _: usize) -> Result<(u64, bool)> {
        self.refused()
    }
    fn check_integrity(&self) -> Result<IntegrityReport> {
        self.refused()
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.refused()
    }
    fn note_failed_issue(&self, id: &[u8; 16]) {
        resync::note_failed_issue(&self.path, id);
    }
    fn reopen(self: Box<Self>) -> (Box<dyn Backend>, Result<()>) {
        self.open_again()
    }
}
