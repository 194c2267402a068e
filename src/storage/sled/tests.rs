//! The sled backend's own tests: sled's descriptor, the family scan, errors.

use super::*;
use crate::error::tests::cause;

/// For tests above `storage/`: moves the refresh record `old` of the
/// closed store in `dir` under an id whose first six bytes are `prefix`'s
/// (the rest kept), and takes out the warm-start marker (the files no
/// longer hold what sled holds), as a store with such ids would hold it.
/// Returns the new id.
pub(crate) fn move_refresh_record(dir: &Path, old: [u8; 16], prefix: [u8; 16]) -> [u8; 16] {
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        // sled lets go of its file lock a moment after the store closes.
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let refresh = db.open_tree("refresh").unwrap();
    let mut rec = decode_refresh(&refresh.get(old).unwrap().unwrap()).unwrap();
    rec.id[..owners::PREFIX].copy_from_slice(&prefix[..owners::PREFIX]);
    refresh
        .insert(rec.id, encode_refresh(&rec).unwrap())
        .unwrap();
    refresh.remove(old).unwrap();
    db.open_tree("meta")
        .unwrap()
        .remove(warm::MARKER_KEY)
        .unwrap();
    db.flush().unwrap();
    rec.id
}

/// The descriptor sled itself writes through is found at open (so that
/// a failed sync pending there is met before sled's own sync when the
/// database is dropped).
#[test]
fn sleds_own_descriptor_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(Some(&dir.path().join("db")), 1 << 20).unwrap();
    let files = backend
        .stable
        .as_ref()
        .expect("a database on disk has files to sync");
    assert!(files.found_sleds());
    backend.meta.insert("x", b"y".as_slice()).unwrap();
    backend.sync().unwrap();
    assert!(SledBackend::open(None, 1 << 20).unwrap().stable.is_none());
}

/// Every record is visited once, and each access record after its
/// family's refresh record, also for families at the edges of the
/// loaders' key ranges, orphans, and keys of odd lengths.
#[test]
fn scan_families_visits_parents_first_and_everything_once() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let refresh = db.open_tree("refresh").unwrap();
    let access = db.open_tree("access").unwrap();
    let mut expected = std::collections::BTreeSet::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut ids: Vec<[u8; 16]> = (0..600)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&x.to_be_bytes());
            id[8..].copy_from_slice(&x.rotate_left(17).to_le_bytes());
            id
        })
        .collect();
    // The edges of the key space and of its parts.
    for first in [0x00, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xff] {
        ids.push([first; 16]);
    }
    for (n, id) in ids.iter().enumerate() {
        if n % 7 != 3 {
            refresh.insert(id, b"r").unwrap();
            expected.insert((true, id.to_vec()));
        }
        for slot in 0..(n % 4) as u32 {
            let k = access_key(id, slot);
            access.insert(k, b"a").unwrap();
            expected.insert((false, k.to_vec()));
        }
    }
    for odd in [&[][..], &[0x80][..], &[0xff; 40][..]] {
        refresh.insert(odd, b"r").unwrap();
        access.insert(odd, b"a").unwrap();
        expected.insert((true, odd.to_vec()));
        expected.insert((false, odd.to_vec()));
    }
    let seen = parking_lot::Mutex::new(Vec::new());
    scan_families(
        4,
        &refresh,
        &access,
        &|_, k, _| seen.lock().push((true, k.to_vec())),
        &|_, k, _| seen.lock().push((false, k.to_vec())),
    )
    .unwrap();
    let seen = seen.into_inner();
    let got: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(got.len(), seen.len(), "a record was visited twice");
    assert_eq!(got, expected);
    let at: std::collections::HashMap<_, _> = seen
        .iter()
        .enumerate()
        .map(|(i, r)| (r.clone(), i))
        .collect();
    let mut checked = 0;
    for (i, (is_refresh, k)) in seen.iter().enumerate() {
        if *is_refresh || k.len() != ACCESS_KEY_LEN {
            continue;
        }
        if let Some(&p) = at.get(&(true, k[..16].to_vec())) {
            assert!(p < i, "access record before its refresh record");
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

#[test]
fn a_sled_error_keeps_its_cause() {
    let e = io(sled::Error::Unsupported("a feature".into()));
    assert_eq!(e.kind(), "io");
    assert!(cause::<sled::Error>(&e).is_some(), "{e:?}");
    // sled's I/O errors reach the std::io::Error inside.
    let e = io(sled::Error::Io(std::io::Error::other("the device is gone")));
    assert_eq!(e.kind(), "io");
    assert!(cause::<std::io::Error>(&e).is_some(), "{e:?}");
}
