//! Round trips, version bytes and damaged input of the record encoding.

use super::*;

#[test]
fn records_round_trip_and_reject_damage() {
    let m = MemberRecord {
        org: "acme".into(),
        user: "ann".into(),
        role: Role::Admin,
        not_before: 5,
    };
    let b = encode(&m).unwrap();
    assert_eq!(decode::<MemberRecord>(&b, "member").unwrap(), m);
    let mut bad = b.clone();
    bad[0] = 9;
    assert!(decode::<MemberRecord>(&bad, "member").is_err());
    let mut long = b.clone();
    long.push(0);
    assert!(decode::<MemberRecord>(&long, "member").is_err());
    assert!(decode::<MemberRecord>(&b[..b.len() - 1], "member").is_err());
    assert!(decode::<MemberRecord>(&[], "member").is_err());
}

fn sample_refresh(i: u64) -> RefreshRecord {
    let pick =
        |n: u64| ["", "a", "acme", "ü-ñ", "x".repeat(300).leak(), "user-42"][(n % 6) as usize];
    RefreshRecord {
        id: [i as u8; 16],
        org: pick(i).into(),
        user: pick(i / 6).into(),
        role_at_issue: Role::ALL[(i % 4) as usize],
        scopes: (0..i % 5).map(|k| pick(k + i).to_string()).collect(),
        label: i.is_multiple_of(3).then(|| pick(i / 2).into()),
        created_at: [0, 250, 251, 65_535, 65_536, u32::MAX as u64 + 1, u64::MAX][(i % 7) as usize],
        created_by: pick(i / 3).into(),
        expires_at: i
            .is_multiple_of(2)
            .then_some(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        state: if i % 4 == 1 {
            StoredState::Revoked {
                at: i * 1_000,
                by: pick(i).into(),
                reason: (i % 8 == 1).then(|| pick(i + 1).into()),
            }
        } else {
            StoredState::Active
        },
        verifier: [(i * 7) as u8; 32],
        life: Default::default(),
        issue: None,
    }
}

fn sample_access(i: u64) -> AccessRecord {
    AccessRecord {
        id: [i as u8; 16],
        refresh_id: [(i >> 8) as u8; 16],
        issued_at: [0, 250, 251, 65_535, 65_536, u32::MAX as u64 + 1, u64::MAX][(i % 7) as usize],
        expires_at: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        revoked: i.is_multiple_of(2),
        verifier: [(i * 3) as u8; 32],
        scopes: None,
    }
}

/// A xorshift generator.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// `bytes` with one random change: a byte set at random or to a value
/// at a length-prefix or version boundary, cut short, or one byte more.
fn damaged(bytes: &[u8], next: &mut impl FnMut() -> u64) -> Vec<u8> {
    let mut m = bytes.to_vec();
    match next() % 4 {
        0 => {
            let k = next() as usize % m.len();
            m[k] = next() as u8;
        }
        1 => m.truncate(next() as usize % m.len()),
        2 => m.push(next() as u8),
        _ => {
            let k = next() as usize % m.len();
            m[k] = [0, 1, 2, 250, 251, 252, 253, 254, 255][(next() % 9) as usize];
        }
    }
    m
}

/// A record read in place says what its decoding says, for both
/// versions, and on damaged bytes it is read only if it decodes.
#[test]
fn views_agree_with_decoding() {
    let mut next = rng(0x9e37_79b9_7f4a_7c15);
    let mut viewed = 0;
    for i in 0..300u64 {
        let mut r = sample_refresh(i);
        if i % 2 == 1 {
            r.issue = Some(IssueEvent {
                seq: i + 1,
                assigned: i % 4 == 1,
            });
        }
        let b = encode_refresh(&r).unwrap();
        let v = view_refresh(&b).expect("a well-formed record is read in place");
        assert!(v == r.view(), "record {i}");
        assert_eq!(v.issue_seq, r.issue.map_or(0, |e| e.seq));
        for _ in 0..40 {
            let m = damaged(&b, &mut next);
            if let Some(v) = view_refresh(&m) {
                let d = decode_refresh(&m).expect("read in place, so it decodes");
                assert!(v == d.view(), "record {i}, damaged");
                viewed += 1;
            }
        }
    }
    // Some damage leaves a readable record (a changed time, say).
    assert!(viewed > 100, "{viewed}");
}

/// The fast readers give the record back, and on damaged bytes either
/// refuse (the caller then asks serde) or agree with serde exactly.
#[test]
fn fast_readers_agree_with_serde() {
    let mut next = rng(0x0123_4567_89ab_cdef);
    let mut checked = 0;
    for i in 0..400u64 {
        let r = sample_refresh(i);
        let a = sample_access(i);
        let rb = encode(&r).unwrap();
        let ab = encode(&a).unwrap();
        assert_eq!(fast_refresh(&rb[1..]).as_ref(), Some(&r), "refresh {i}");
        assert_eq!(fast_access(&ab).as_ref(), Some(&a), "access {i}");
        assert_eq!(decode_refresh(&rb).unwrap(), r);
        assert_eq!(decode_access(&ab).unwrap(), a);
        for _ in 0..40 {
            for (bytes, is_refresh) in [(&rb, true), (&ab, false)] {
                let m = damaged(bytes, &mut next);
                if is_refresh && m.first() == Some(&FORMAT_VERSION) {
                    if let Some(f) = fast_refresh(&m[1..]) {
                        assert_eq!(decode::<RefreshRecord>(&m, "refresh").ok(), Some(f));
                        checked += 1;
                    }
                    assert_eq!(
                        decode_refresh(&m).ok(),
                        decode::<RefreshRecord>(&m, "refresh").ok()
                    );
                } else if is_refresh {
                    // Another version byte: version 2 reads the same
                    // body before its trailer; anything else is refused.
                    if m.first() != Some(&REFRESH_WITH_EVENT) {
                        assert!(decode_refresh(&m).is_err());
                    }
                } else {
                    if let Some(f) = fast_access(&m) {
                        assert_eq!(decode::<AccessRecord>(&m, "access").ok(), Some(f));
                        checked += 1;
                    }
                    assert_eq!(
                        decode_access(&m).ok(),
                        decode::<AccessRecord>(&m, "access").ok()
                    );
                }
            }
        }
    }
    // Damage that still decodes happens (a changed byte of an id, a
    // string, a time): the agreement above was really exercised.
    assert!(checked > 1_000, "{checked}");
}

/// A record that carries its issue event keeps it through a round
/// trip; without one it is the version-1 record, byte for byte; a
/// damaged trailer is refused.
#[test]
fn refresh_records_carry_their_issue_event() {
    for i in 0..200u64 {
        let plain = sample_refresh(i);
        assert_eq!(encode_refresh(&plain).unwrap(), encode(&plain).unwrap());
        let mut r = plain.clone();
        r.issue = Some(IssueEvent {
            seq: i + 1,
            assigned: i % 2 == 1,
        });
        let b = encode_refresh(&r).unwrap();
        assert_eq!(b[0], REFRESH_WITH_EVENT);
        assert_eq!(b.len(), encode(&plain).unwrap().len() + ISSUE_TRAILER);
        let back = decode_refresh(&b).unwrap();
        assert_eq!(back, r);
        let ev = back.issue_event().unwrap();
        assert_eq!(ev.seq, i + 1);
        assert_eq!(ev.at, r.created_at);
        assert_eq!(ev.actor, r.created_by);
        let action = if i % 2 == 1 {
            "token.assign"
        } else {
            "token.generate"
        };
        assert_eq!(ev.action, action);
        assert_eq!(ev.target, Some(issue_target(&r.id, &r.user)));
        let mut bad_flag = b.clone();
        *bad_flag.last_mut().unwrap() = 7;
        assert!(decode_refresh(&bad_flag).is_err());
        let mut zero_seq = b.clone();
        let n = zero_seq.len();
        zero_seq[n - 9..n - 1].fill(0);
        assert!(decode_refresh(&zero_seq).is_err());
        assert!(decode_refresh(&b[..b.len() - 1]).is_err());
        assert!(decode_refresh(&b[..5]).is_err());
        // The generic decoder does not take version 2.
        assert!(decode::<RefreshRecord>(&b, "refresh").is_err());
    }
    assert!(decode_refresh(&[REFRESH_WITH_EVENT]).is_err());
    assert!(sample_refresh(1).issue_event().is_none());
}

fn sample_event(i: u64) -> EventRecord {
    EventRecord {
        seq: i + 1,
        at: 1_000 + i,
        org: "acme".into(),
        actor: "adam".into(),
        action: "token.assign".into(),
        target: i.is_multiple_of(2).then(|| format!("user-{i}")),
        outcome: "denied: only the Owner may assign tokens".into(),
        count: 1,
        last_at: 1_000 + i,
    }
}

/// An event of one call is stored as events always were (version 1,
/// byte for byte), and an event stored that way reads as one call; a
/// coalesced event keeps its count and last time; damage is refused.
#[test]
fn events_carry_their_count_and_old_ones_read_as_one_call() {
    for i in 0..50u64 {
        let one = sample_event(i);
        let old = encode(&one).unwrap();
        assert_eq!(old[0], FORMAT_VERSION);
        assert_eq!(encode_event(&one).unwrap(), old);
        let back = decode_event(&old).unwrap();
        assert_eq!((back.count, back.last_at), (1, one.at));
        assert_eq!(back, one);
        let mut many = one.clone();
        many.count = 2 + i * 1_000;
        many.last_at = one.at + i;
        let b = encode_event(&many).unwrap();
        assert_eq!(b[0], EVENT_WITH_COUNT);
        assert_eq!(b.len(), old.len() + COUNT_TRAILER);
        assert_eq!(decode_event(&b).unwrap(), many);
        assert_eq!(decode_any(RecordType::Event, &b).unwrap(), b);
        assert!(decode_event(&b[..b.len() - 1]).is_err());
        assert!(decode_event(&b[..COUNT_TRAILER]).is_err());
        let mut zero = b.clone();
        let n = zero.len();
        zero[n - 16..n - 8].fill(0);
        assert!(decode_event(&zero).is_err());
        let mut early = b.clone();
        early[n - 8..].fill(0);
        assert!(decode_event(&early).is_err());
        // The generic decoder does not take version 2.
        assert!(decode::<EventRecord>(&b, "event").is_err());
    }
    assert!(decode_event(&[EVENT_WITH_COUNT]).is_err());
    assert!(decode_event(&[]).is_err());
}

#[test]
fn text_is_cut_on_a_character_boundary_and_marked() {
    assert_eq!(truncate_text("short", 10), "short");
    assert_eq!(truncate_text("0123456789", 10), "0123456789");
    assert_eq!(truncate_text("0123456789a", 10), "0123456…");
    // "é" is two bytes: a cut never splits it.
    let s = "é".repeat(100);
    for max in 3..40 {
        let t = truncate_text(&s, max);
        assert!(t.len() <= max, "{max}: {}", t.len());
        assert!(t.ends_with('…'));
        assert!(t.len() + 2 > max, "{max}: cut more than a character");
    }
    let long = "x".repeat(16 * 1024);
    assert_eq!(truncate_text(&long, 176).len(), 176);
}

#[test]
fn huge_length_prefix_does_not_allocate() {
    // version, then a string length of u64::MAX in varint form.
    let bytes = [1u8, 253, 255, 255, 255, 255, 255, 255, 255, 255];
    assert!(decode::<MemberRecord>(&bytes, "member").is_err());
}

/// A record with lifecycle state (suspended, rotated, a successor) keeps
/// it through a round trip, with or without an issue event; the fast
/// reader sees the same state as full decoding; a record without any
/// stays the version-1 or -2 record; every cut or flipped byte of a
/// version-3 record is refused or decodes to something the fast reader
/// agrees with, and nothing panics.
#[test]
fn refresh_records_carry_their_lifecycle() {
    for i in 0..120u64 {
        let mut r = sample_refresh(i);
        r.life = Lifecycle {
            disabled: i % 3 != 1,
            rotated: i % 3 != 0,
            pending_until: if i % 5 == 0 { 0 } else { i * 1_000_003 },
            ..Lifecycle::default()
        };
        r.issue = (i % 4 == 0).then_some(IssueEvent {
            seq: i + 1,
            assigned: i % 8 == 0,
        });
        let b = encode_refresh(&r).unwrap();
        assert_eq!(b[0], REFRESH_WITH_LIFECYCLE);
        assert_eq!(decode_refresh(&b).unwrap(), r);
        let bare = decode_refresh(&encode_refresh_bare(&r).unwrap()).unwrap();
        assert_eq!((bare.issue, &bare.life), (None, &r.life));
        if let Some(v) = view_refresh(&b) {
            assert!(v == r.view(), "fast view of record {i}");
        }
        // Without lifecycle state: the record as before, byte for byte.
        let mut plain = r.clone();
        plain.life = Lifecycle::default();
        assert_ne!(encode_refresh(&plain).unwrap()[0], REFRESH_WITH_LIFECYCLE);
        for cut in [1, 2, 3, 9, 10, 11, b.len() - 1] {
            if cut < b.len() {
                let _ = decode_refresh(&b[..b.len() - cut]);
                let _ = view_refresh(&b[..b.len() - cut]);
            }
        }
        for at in 0..b.len() {
            let mut m = b.clone();
            m[at] ^= 0x41;
            if let Some(v) = view_refresh(&m) {
                let d = decode_refresh(&m).expect("read in place, so it decodes");
                assert!(v == d.view());
            }
        }
    }
    // A version-3 record whose lifecycle is the default is never written.
    // (The lifecycle here is three bytes: disabled, rotated, then a
    // pending time of 0.)
    let mut r = sample_refresh(2);
    r.life.disabled = true;
    let mut b = encode_refresh(&r).unwrap();
    let n = b.len();
    // The lifecycle's first byte (disabled) sits just before its length.
    let len = usize::from(u16::from_be_bytes([b[n - 11], b[n - 10]]));
    assert_eq!(len, 3);
    b[n - 11 - len] = 0;
    assert!(decode_refresh(&b).is_err());
    assert!(decode_refresh(&[REFRESH_WITH_LIFECYCLE]).is_err());
}

const T0_SPENT: u64 = 1_700_000_000;

/// Rotation-on-use state (spent, family) goes through a round trip as a
/// version-4 record, with or without version-3 state and an issue event;
/// a record without it keeps its older version byte for byte; a version-4
/// record without rotation state is refused; damage never panics.
#[test]
fn refresh_records_carry_their_rotation_state() {
    for i in 0..96u64 {
        let mut r = sample_refresh(i);
        r.life = Lifecycle {
            disabled: i % 3 == 1,
            rotated: i % 2 == 0,
            pending_until: 0,
            spent_until: if i % 2 == 0 { T0_SPENT + i } else { 0 },
            family: (i % 4 != 0).then_some([i as u8; 16]),
        };
        r.issue = (i % 5 == 0).then_some(IssueEvent {
            seq: i + 1,
            assigned: false,
        });
        let b = encode_refresh(&r).unwrap();
        assert_eq!(b[0], REFRESH_WITH_ROTATION, "record {i}");
        assert_eq!(decode_refresh(&b).unwrap(), r);
        let bare = decode_refresh(&encode_refresh_bare(&r).unwrap()).unwrap();
        assert_eq!((bare.issue, &bare.life), (None, &r.life));
        if let Some(v) = view_refresh(&b) {
            assert!(v == r.view(), "fast view of record {i}");
            assert_eq!(
                (v.life.spent_until, v.life.family),
                (r.life.spent_until, r.life.family)
            );
        }
        // Without rotation state: the older record, byte for byte.
        let mut older = r.clone();
        older.life.spent_until = 0;
        older.life.family = None;
        let ob = encode_refresh(&older).unwrap();
        assert_ne!(ob[0], REFRESH_WITH_ROTATION);
        assert_eq!(decode_refresh(&ob).unwrap(), older);
        for cut in 1..b.len() {
            let _ = decode_refresh(&b[..b.len() - cut]);
            let _ = view_refresh(&b[..b.len() - cut]);
        }
        for at in 0..b.len() {
            let mut m = b.clone();
            m[at] ^= 0x41;
            if let Some(v) = view_refresh(&m) {
                let d = decode_refresh(&m).expect("read in place, so it decodes");
                assert!(v == d.view());
            }
        }
    }
    // A version-4 record whose rotation state is the default is refused:
    // take a version-3 record and mark it version 4 with a default
    // rotation state spliced in.
    let mut r = sample_refresh(7);
    r.life.disabled = true;
    let b = encode_refresh(&r).unwrap();
    let (head, trailer) = b.split_at(b.len() - 9);
    let mut forged = head.to_vec();
    forged[0] = REFRESH_WITH_ROTATION;
    // bincode of (0, None): two zero bytes (a varint 0, then None).
    forged.extend_from_slice(&[0, 0, 0, 2]);
    forged.extend_from_slice(trailer);
    assert!(decode_refresh(&forged).is_err());
    // The same splice with a spent time decodes, as spent.
    let n = forged.len();
    forged[n - 9 - 4] = 9;
    let d = decode_refresh(&forged).unwrap();
    assert_eq!(d.life.spent_until, 9);
    assert!(d.life.disabled && d.life.family.is_none());
    assert!(decode_refresh(&[REFRESH_WITH_ROTATION]).is_err());
}

#[test]
fn access_records_carry_their_narrowing_and_old_ones_read_as_not_narrowed() {
    let plain = sample_access(3);
    let b = encode_access(&plain).unwrap();
    // Not narrowed: written exactly as before narrowing existed.
    assert_eq!(b, encode(&plain).unwrap());
    assert_eq!(b[0], FORMAT_VERSION);
    assert_eq!(decode_access(&b).unwrap().scopes, None);
    let mut narrowed = sample_access(4);
    narrowed.scopes = Some(vec!["read".into(), "squad-read".into()]);
    let n = encode_access(&narrowed).unwrap();
    assert_eq!(n[0], ACCESS_WITH_SCOPES);
    assert_eq!(decode_access(&n).unwrap(), narrowed);
    assert_eq!(
        decode_any(RecordType::Access, &n).unwrap(),
        n,
        "the fuzz target's round trip keeps the narrowing"
    );
    // An empty narrowing is never written, and never accepted.
    narrowed.scopes = Some(Vec::new());
    assert!(encode_access(&narrowed).is_err());
    let mut empty = encode(&narrowed).unwrap();
    empty[0] = ACCESS_WITH_SCOPES;
    empty.extend_from_slice(&[0, 0, 1]);
    assert!(decode_access(&empty).is_err());
    // Damage is an error, never a panic: every cut and flipped byte.
    for cut in 0..n.len() {
        let _ = decode_access(&n[..cut]);
    }
    let mut next = rng(7);
    for _ in 0..2000 {
        let d = damaged(&n, &mut next);
        if let Ok(a) = decode_access(&d) {
            let s = a.scopes.as_ref().map_or(0, Vec::len);
            assert!(s <= 64);
        }
    }
    // A length that points before the body.
    let mut long = n.clone();
    let l = long.len();
    long[l - 2..].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(decode_access(&long).is_err());
}

#[test]
fn last_use_values_round_trip_and_read_the_old_time_alone() {
    // What earlier versions wrote: the time alone.
    assert_eq!(decode_last_use(&7u64.to_be_bytes()), Some((7, None)));
    for client in [
        ClientInfo::new(Some("192.0.2.1".parse().unwrap()), Some("a/1")),
        ClientInfo::new(Some("2001:db8::1".parse().unwrap()), None),
        ClientInfo::new(None, Some(&"é".repeat(200))),
    ] {
        let v = encode_last_use(9, Some(&client));
        assert_eq!(decode_last_use(&v), Some((9, Some(client))));
    }
    // Nothing known of the client: the old form.
    assert_eq!(
        encode_last_use(3, Some(&ClientInfo::default())),
        3u64.to_be_bytes()
    );
    // Damage: short, an unknown tag or address kind, a cut address, an
    // agent over the bound or not UTF-8.
    let good = encode_last_use(1, Some(&ClientInfo::new(None, Some("x"))));
    let mut bad = good.clone();
    bad[8] = 2;
    let mut kind = good.clone();
    kind[9] = 5;
    let mut long = good[..10].to_vec();
    long.extend(std::iter::repeat_n(b'a', ClientInfo::MAX_AGENT + 1));
    let mut utf = good[..10].to_vec();
    utf.extend([0xff, 0xfe]);
    for v in [
        &good[..5],
        &bad[..],
        &kind[..],
        &[0, 0, 0, 0, 0, 0, 0, 1, 1, 4, 1, 2][..],
        &long[..],
        &utf[..],
    ] {
        assert_eq!(decode_last_use(v), None, "{v:?}");
    }
}

proptest::proptest! {
    /// Any bytes: no panic, and what reads as a last use writes back to
    /// the same.
    #[test]
    fn last_use_decoding_takes_any_bytes(
        v in proptest::collection::vec(proptest::num::u8::ANY, 0..300)
    ) {
        if let Some((at, client)) = decode_last_use(&v) {
            let again = encode_last_use(at, client.as_ref());
            proptest::prop_assert_eq!(decode_last_use(&again), Some((at, client)));
        }
    }
}
