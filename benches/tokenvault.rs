//! Criterion benchmarks: `cargo bench` (a store of 10,000
//! tokens, about two minutes); `TOKENVAULT_BENCH_LARGE=1 cargo bench` adds
//! a store of 1,000,000 tokens. One line summary per figure: see
//! `cargo run --release --example perf_report`.
//!
//! Operations whose set-up is costly (revoking a token with 10,000 live
//! access tokens, revoke-all of a member, purge) time at most a few real
//! operations per criterion sample and scale the time to the requested
//! iteration count, so that set-up does not dominate the run.

mod support;

use std::cell::RefCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use support::*;
use tokenvault::{Actor, Config, Error, ManualClock, RevokeScope, Role, StoreKey, TokenStore};

const KEY: [u8; 32] = [0x42; 32];
const CAP: usize = 10_001;

fn sizes() -> Vec<usize> {
    let mut v = vec![10_000];
    if std::env::var("TOKENVAULT_BENCH_LARGE").is_ok_and(|v| v == "1") {
        v.push(1_000_000);
    }
    v
}

fn config(path: &Path) -> Config {
    // Benchmarks issue thousands of tokens to a few members.
    Config::new(path)
        .key(StoreKey::from_bytes(KEY))
        .max_access_per_refresh(CAP)
        .max_live_tokens_per_member(usize::MAX)
}

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    store: RefCell<Option<TokenStore>>,
    sample: Sample,
    layout: Layout,
}

impl Fixture {
    fn new(tokens: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let layout = Layout::for_tokens(tokens);
        let store = config(&path).open().expect("open");
        let sample = populate(&store, layout, 5_000).expect("populate");
        Fixture {
            dir,
            path,
            store: RefCell::new(Some(store)),
            sample,
            layout,
        }
    }

    fn store(&self) -> TokenStore {
        self.store.borrow().as_ref().expect("open").clone()
    }

    fn reopen(&self) {
        drop(self.store.borrow_mut().take());
        *self.store.borrow_mut() = Some(config(&self.path).open().expect("reopen"));
    }
}

/// Runs `setup` (untimed) and `op` (timed) at most `max_real` times and
/// scales the time to `iters` iterations.
fn sampled<S>(
    iters: u64,
    max_real: u64,
    mut setup: impl FnMut() -> S,
    mut op: impl FnMut(S),
) -> Duration {
    let real = iters.clamp(1, max_real);
    let mut total = Duration::ZERO;
    for _ in 0..real {
        let s = setup();
        let t = Instant::now();
        op(s);
        total += t.elapsed();
    }
    total.mul_f64(iters as f64 / real as f64)
}

fn verify_benches(c: &mut Criterion, f: &Fixture, tokens: usize) {
    let mut g = c.benchmark_group(format!("verify/{tokens}"));
    let store = f.store();
    let hot = &f.sample.access[..64];
    let mut i = 0;
    g.bench_function("valid_hot", |b| {
        b.iter(|| {
            i += 1;
            black_box(store.verify(&hot[i % hot.len()]).expect("valid"))
        })
    });
    let mut i = 0;
    g.bench_function("authorize", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                store
                    .authorize(&hot[i % hot.len()], "read")
                    .expect("allowed"),
            )
        })
    });
    let malformed = format!("{}x", &hot[0][..hot[0].len() - 1]);
    g.bench_function("malformed", |b| {
        b.iter(|| {
            assert!(matches!(
                store.verify(black_box(&malformed)),
                Err(Error::Malformed(_))
            ))
        })
    });
    let unknown = tokenvault::token::encode_raw(
        store.prefix(),
        tokenvault::TokenKind::Access,
        [9; 16],
        [9; 32],
    );
    g.bench_function("unknown_id", |b| {
        b.iter(|| {
            assert!(matches!(
                store.verify(black_box(&unknown)),
                Err(Error::InvalidToken)
            ))
        })
    });
    // A revoked family.
    let org = org_name(0);
    store
        .add_member(&org, "revoked-bench", Role::User)
        .expect("member");
    let a = Actor::new(org.clone(), "revoked-bench");
    let mut made = Vec::new();
    store
        .bulk_issue_for_benchmarks(&a, 1, 1, &mut |r, acc| made.push((r, acc)))
        .expect("issue");
    let (_, id) = tokenvault::token::inspect(store.prefix(), made[0].0.expose()).expect("id");
    store.revoke(&a, &id, None).expect("revoke");
    let revoked = made[0].1[0].expose().to_string();
    g.bench_function("revoked", |b| {
        b.iter(|| {
            assert!(matches!(
                store.verify(black_box(&revoked)),
                Err(Error::Revoked)
            ))
        })
    });
    drop(store);
    // First touch after reopen: each sample token verified once per opening.
    let mut next = 0usize;
    g.bench_function("valid_first_touch_after_reopen", |b| {
        b.iter_custom(|iters| {
            if next + 100 > f.sample.access.len() {
                f.reopen();
                next = 0;
            }
            let store = f.store();
            let real = (iters as usize).clamp(1, f.sample.access.len() - next);
            let t = Instant::now();
            for tok in &f.sample.access[next..next + real] {
                black_box(store.verify(tok).expect("valid"));
            }
            let el = t.elapsed();
            next += real;
            el.mul_f64(iters as f64 / real as f64)
        })
    });
    g.finish();
}

fn write_benches(c: &mut Criterion, f: &Fixture, tokens: usize) {
    let store = f.store();
    let mut g = c.benchmark_group(format!("write/{tokens}"));
    g.sample_size(20);
    let refresh = &f.sample.refresh;
    let mut i = 0;
    g.bench_function("exchange_lazy", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                store
                    .exchange(&refresh[i % refresh.len()])
                    .expect("exchange"),
            )
        })
    });
    let actors: Vec<Actor> = (0..f.layout.members_per_org.min(16))
        .map(|m| Actor::new(org_name(0), user_name(m)))
        .collect();
    let mut i = 0;
    g.bench_function("generate_durable", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                store
                    .generate(&actors[i % actors.len()], Default::default())
                    .expect("generate"),
            )
        })
    });
    let owner = Actor::new(org_name(0), user_name(0));
    let assignee = user_name(2);
    g.bench_function("assign_durable", |b| {
        b.iter(|| {
            black_box(
                store
                    .assign(&owner, &assignee, Default::default())
                    .expect("assign"),
            )
        })
    });
    g.finish();

    // Durable exchange needs its own store (a setting of the store); the
    // default cap of 10 means each exchange past the tenth evicts one.
    let dir = tempfile::tempdir().expect("tempdir");
    let durable = Config::new(dir.path().join("durable"))
        .key(StoreKey::from_bytes(KEY))
        .durable_exchange(true)
        .max_live_tokens_per_member(usize::MAX)
        .open()
        .expect("open");
    durable
        .add_member("acme", "ann", Role::Owner)
        .expect("member");
    let t = durable
        .generate(&Actor::new("acme", "ann"), Default::default())
        .expect("generate");
    let mut g = c.benchmark_group(format!("write/{tokens}"));
    g.sample_size(20);
    g.bench_function("exchange_durable", |b| {
        b.iter(|| black_box(durable.exchange(t.token.expose()).expect("exchange")))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("revoke/{tokens}"));
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let org = org_name(0);
    store
        .add_member(&org, "revoke-bench", Role::User)
        .expect("member");
    let who = Actor::new(org.clone(), "revoke-bench");
    for live in [0usize, 100, 10_000] {
        let max_real = if live == 10_000 { 2 } else { 20 };
        g.bench_with_input(BenchmarkId::new("live_access", live), &live, |b, &live| {
            b.iter_custom(|iters| {
                sampled(
                    iters,
                    max_real,
                    || {
                        let mut made = Vec::new();
                        store
                            .bulk_issue_for_benchmarks(&who, 1, live, &mut |r, _| made.push(r))
                            .expect("issue");
                        tokenvault::token::inspect(store.prefix(), made[0].expose())
                            .expect("id")
                            .1
                    },
                    |id| store.revoke(&who, &id, None).expect("revoke"),
                )
            })
        });
    }
    let mut k = 0;
    g.bench_function("revoke_all_member_100", |b| {
        b.iter_custom(|iters| {
            sampled(
                iters,
                3,
                || {
                    k += 1;
                    let user = format!("bulk{k}");
                    store.add_member(&org, &user, Role::User).expect("member");
                    let a = Actor::new(org.clone(), user.clone());
                    store
                        .bulk_issue_for_benchmarks(&a, 100, 1, &mut |_, _| {})
                        .expect("issue");
                    (a, user)
                },
                |(a, user)| {
                    let n = store
                        .revoke_all(&a, RevokeScope::Member(user), None)
                        .expect("revoke_all");
                    assert_eq!(n, 100);
                },
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("list/{tokens}"));
    g.sample_size(10);
    let member = Actor::new(org_name(0), user_name(5));
    g.bench_function("list_own", |b| {
        b.iter(|| black_box(store.list_own(&member).expect("list")))
    });
    g.bench_function("list_org", |b| {
        b.iter(|| black_box(store.list_org(&owner).expect("list")))
    });
    g.finish();
}

/// Purge in its own store with a manual clock: each timed call removes a
/// batch of 1,000 expired access tokens.
fn purge_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_800_000_000);
    let store = config(&dir.path().join("purge"))
        .clock(clock.clone())
        .open()
        .expect("open");
    store
        .add_member("acme", "ann", Role::Owner)
        .expect("member");
    let ann = Actor::new("acme", "ann");
    let mut g = c.benchmark_group("purge");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function("batch_of_1000_expired_access", |b| {
        b.iter_custom(|iters| {
            sampled(
                iters,
                3,
                || {
                    store
                        .bulk_issue_for_benchmarks(&ann, 1_000, 1, &mut |_, _| {})
                        .expect("issue");
                    clock.advance(7_200);
                },
                |()| {
                    let r = store.purge_expired(1_000).expect("purge");
                    assert_eq!(r.access_removed, 1_000);
                },
            )
        })
    });
    g.finish();
}

fn baselines(c: &mut Criterion, f: &Fixture, tokens: usize) {
    let db = floor_db(&f.dir.path().join("floor"), tokens as u64);
    let floor = Floor::new(&db, tokens as u64);
    let mut g = c.benchmark_group(format!("baseline/{tokens}"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("floor_blake3_sled_get_decode", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert!(floor.check(x % tokens as u64))
        })
    });
    let jwt = Jwt::new();
    g.bench_function("jwt_hs256_decode_validate", |b| {
        b.iter(|| black_box(jwt.check()))
    });
    let mut i = 0u64;
    g.bench_function("sled_insert", |b| {
        b.iter(|| {
            i += 1;
            sled_insert(&floor.tree, i)
        })
    });
    g.sample_size(20);
    let mut i = 1u64 << 40;
    g.bench_function("sled_insert_flush", |b| {
        b.iter(|| {
            i += 1;
            sled_insert(&floor.tree, i);
            db.flush().expect("flush")
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    for tokens in sizes() {
        let f = Fixture::new(tokens);
        verify_benches(c, &f, tokens);
        write_benches(c, &f, tokens);
        drop(f.store.borrow_mut().take());
        baselines(c, &f, tokens);
    }
    purge_bench(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = all
}
criterion_main!(benches);
