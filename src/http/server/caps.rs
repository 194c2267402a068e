//! The connection caps of [`serve_on`](super::serve_on): connections per
//! peer address, and the slots of [`HttpConfig::max_connections`](crate::http::HttpConfig::max_connections)
//! with the choice of which connection gives its slot up to a newcomer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Which key a peer's connections count under: the IPv4 address, or the
/// /64 network of an IPv6 one (one host easily holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per peer key.
#[derive(Clone)]
pub(super) struct Peers {
    cap: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted for its peer until dropped.
pub(super) struct PeerPermit {
    peers: Peers,
    key: IpAddr,
}

impl Peers {
    pub(super) fn new(cap: usize) -> Self {
        Peers {
            cap,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(super) fn enter(&self, ip: IpAddr) -> Option<PeerPermit> {
        let key = peer_key(ip);
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(PeerPermit {
            peers: self.clone(),
            key,
        })
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Marks a response to a request that presented a bearer or refresh token
/// the route accepted: its connection is kept over anonymous ones when the
/// server is full.
#[derive(Clone, Copy)]
pub(super) struct Credentialed;

/// Whether the answer `status` on a matched route shows that the request's
/// bearer or refresh token was accepted (the routes check it before
/// anything else, and answer 400 or 401 when it is missing or bad).
pub(super) fn credential_accepted(status: StatusCode) -> bool {
    !matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) && !status.is_server_error()
}

/// What the server knows of one open connection, for choosing which one
/// to close when a new one arrives at [`HttpConfig::max_connections`].
pub(super) struct SlotState {
    /// When (milliseconds from [`Slots::base`]) the connection last moved a
    /// byte or finished an answer: for an idle or stalled connection, how
    /// long it has been so.
    pub(super) last: AtomicU64,
    /// Requests being handled (not closable meanwhile).
    pub(super) busy: AtomicU32,
    /// Whether a request on it presented an accepted token.
    pub(super) trusted: AtomicBool,
    /// Told to close when its slot goes to a new connection.
    pub(super) evict: Notify,
    base: Instant,
}

impl SlotState {
    pub(super) fn touch(&self) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }
}

fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The connections being served, at most `cap`.
#[derive(Clone)]
pub(super) struct Slots {
    cap: usize,
    base: Instant,
    open: Arc<Mutex<SlotTable>>,
}

#[derive(Default)]
struct SlotTable {
    next: u64,
    by_id: HashMap<u64, Arc<SlotState>>,
}

/// A connection's place, given back when it is dropped.
pub(super) struct Slot {
    slots: Slots,
    id: u64,
    pub(super) shared: Arc<SlotState>,
}

impl Slots {
    pub(super) fn new(cap: usize) -> Self {
        Slots {
            cap: cap.max(1),
            base: Instant::now(),
            open: Arc::new(Mutex::new(SlotTable::default())),
        }
    }

    /// A place for a new connection: a free one, or else the place of the
    /// connection idle or stalled longest (one that never presented an
    /// accepted token first), which is told to close. `None` when every
    /// connection is handling a request.
    pub(super) fn admit(&self) -> Option<Slot> {
        let mut t = self.open.lock();
        if t.by_id.len() >= self.cap {
            let victim = t
                .by_id
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, s)| {
                    (
                        s.trusted.load(Ordering::Relaxed),
                        s.last.load(Ordering::Relaxed),
                    )
                })
                .map(|(id, _)| *id)?;
            if let Some(s) = t.by_id.remove(&victim) {
                s.evict.notify_one();
            }
        }
        t.next += 1;
        let id = t.next;
        let shared = Arc::new(SlotState {
            last: AtomicU64::new(millis_since(self.base)),
            busy: AtomicU32::new(0),
            trusted: AtomicBool::new(false),
            evict: Notify::new(),
            base: self.base,
        });
        t.by_id.insert(id, shared.clone());
        Some(Slot {
            slots: self.clone(),
            id,
            shared,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.lock().by_id.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Context;

    #[test]
    fn peers_count_per_ipv4_address_and_ipv6_network() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(peer_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(peer_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
    }

    #[test]
    fn every_address_of_an_ipv6_56_is_keyed_by_its_64() {
        let base: Ipv6Addr = "2001:db8:ab:cd00::".parse().unwrap();
        let s = base.segments();
        let mut keys = std::collections::HashSet::new();
        for net in 0u16..256 {
            let key_of = |host: [u16; 4]| {
                peer_key(IpAddr::V6(Ipv6Addr::new(
                    s[0],
                    s[1],
                    s[2],
                    s[3] | net,
                    host[0],
                    host[1],
                    host[2],
                    host[3],
                )))
            };
            let key = key_of([0, 0, 0, 1]);
            // Any host of the /64 counts under the same key...
            for host in [[0, 0, 0, 2], [0xffff; 4], [0x1234, 0, 0xabcd, 7]] {
                assert_eq!(key_of(host), key, "/64 number {net}");
            }
            // ...which is the /64 itself.
            assert_eq!(
                key,
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3] | net, 0, 0, 0, 0))
            );
            keys.insert(key);
        }
        // A /56 holds 256 keys, one per /64.
        assert_eq!(keys.len(), 256);
    }

    #[test]
    fn at_the_cap_the_longest_idle_anonymous_slot_is_given_up() {
        let slots = Slots::new(3);
        let a = slots.admit().expect("free");
        let b = slots.admit().expect("free");
        let c = slots.admit().expect("free");
        // a: trusted and idle longest; b: anonymous, idle; c: busy.
        a.shared.trusted.store(true, Ordering::Relaxed);
        a.shared.last.store(0, Ordering::Relaxed);
        b.shared.last.store(5, Ordering::Relaxed);
        c.shared.last.store(1, Ordering::Relaxed);
        c.shared.busy.store(1, Ordering::Relaxed);
        let d = slots.admit().expect("b is closable");
        d.shared.busy.store(1, Ordering::Relaxed);
        assert!(!slots.open.lock().by_id.contains_key(&b.id));
        // b was told to close (the permit is stored for its waiter).
        let told = b.shared.evict.notified();
        tokio_test_ready(told);
        // Next goes the trusted one, not the busy one.
        let _e = slots.admit().expect("a is closable");
        assert!(!slots.open.lock().by_id.contains_key(&a.id));
        // Only busy ones are left: none can be closed.
        _e.shared.busy.store(1, Ordering::Relaxed);
        assert!(slots.admit().is_none());
        drop(c);
        assert!(
            slots.admit().is_some(),
            "a closed connection frees its slot"
        );
    }

    /// Polls `f` once and asserts it is ready.
    fn tokio_test_ready<F: Future>(f: F) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_peer_permit_is_given_back_on_drop() {
        let peers = Peers::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let one = peers.enter(ip).expect("first");
        let two = peers.enter(ip).expect("second");
        assert!(peers.enter(ip).is_none());
        let three = peers
            .enter(other)
            .expect("another address has its own count");
        drop(one);
        let again = peers.enter(ip).expect("a permit came back");
        drop((two, three, again));
        assert!(
            peers.open.lock().is_empty(),
            "no entry outlives its connections"
        );
    }
}
