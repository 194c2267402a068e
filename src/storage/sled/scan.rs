//! Reading the trees in parallel, families (a refresh record, then its
//! access records) in key order.

use super::*;

/// How many parts [`scan_families`] cuts the key space into.
pub(super) fn scan_parts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// A record visitor of [`scan_families`]: the part of the key space (which
/// loader thread), key and value.
pub(super) type Visit<'a> = &'a (dyn Fn(usize, &[u8], &[u8]) + Sync);

/// Calls `on_refresh` on every entry of the refresh tree and `on_access` on
/// every entry of the access tree, each refresh record before the access
/// records of its family and those right after it (both trees are ordered
/// by refresh id: a merge of the two scans). The key space is cut into
/// ranges by first byte, one thread each (keys start with a random id, so
/// the ranges hold about as many records): opening a store is mostly
/// sled's page reads, decoding, and inserts into the in-memory maps, and
/// a family handled at once finds its refresh token still in the cache.
pub(super) fn scan_families(
    parts: usize,
    refresh: &Tree,
    access: &Tree,
    on_refresh: Visit<'_>,
    on_access: Visit<'_>,
) -> Result<()> {
    let bound = |i: usize| -> Option<[u8; 1]> {
        // The first key byte where part `i` starts (none: the end).
        (i < parts).then(|| [(i * 256 / parts) as u8])
    };
    let scan = |i: usize| -> Result<()> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lo = bound(i).filter(|_| i > 0);
        let hi = bound(i + 1);
        let range = (
            lo.as_ref().map_or(Unbounded, |b| Included(&b[..])),
            hi.as_ref().map_or(Unbounded, |b| Excluded(&b[..])),
        );
        let mut accesses = access.range::<&[u8], _>(range);
        let mut pending: Option<(sled::IVec, sled::IVec)> = None;
        // Hands on the access records with keys below `below` (all of them
        // when `None`): the families of the refresh records already seen,
        // and orphans.
        let mut drain = |below: Option<&[u8]>| -> Result<()> {
            loop {
                let (k, v) = match pending.take() {
                    Some(kv) => kv,
                    None => match accesses.next() {
                        Some(kv) => kv.map_err(io)?,
                        None => return Ok(()),
                    },
                };
                if below.is_some_and(|b| k[..] >= *b) {
                    pending = Some((k, v));
                    return Ok(());
                }
                on_access(i, &k, &v);
            }
        };
        for kv in refresh.range::<&[u8], _>(range) {
            let (k, v) = kv.map_err(io)?;
            drain(Some(&k))?;
            on_refresh(i, &k, &v);
        }
        drain(None)
    };
    std::thread::scope(|s| {
        let others: Vec<_> = (1..parts).map(|i| s.spawn(move || scan(i))).collect();
        let mut res = scan(0);
        for h in others {
            let r = h
                .join()
                .map_err(|_| Error::Io("a loader thread failed".into()))?;
            res = res.and(r);
        }
        res
    })
}

pub(super) fn org_from_key(k: &[u8]) -> Option<String> {
    let (&len, rest) = k.split_first()?;
    if rest.len() != len as usize {
        return None;
    }
    String::from_utf8(rest.to_vec()).ok()
}

pub(super) fn u64_from(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
