//! Criterion benchmarks of reading and editing one token, the paged lists
//! and the audit, and `sync_org`: `cargo bench --bench reads` (a store on
//! disk; one member holding 100 tokens, an org of 50 members).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokenvault::{Actor, Config, Page, Role, StoreKey, TokenId, TokenStore};

fn open(dir: &std::path::Path) -> TokenStore {
    Config::new(dir.join("db"))
        .key(StoreKey::from_bytes([0x42; 32]))
        .max_live_tokens_per_member(usize::MAX)
        .open()
        .expect("open")
}

fn members(n: usize, owner: &str) -> Vec<(String, Role)> {
    let mut v: Vec<(String, Role)> = (0..n).map(|i| (format!("m{i}"), Role::User)).collect();
    v.push((owner.to_string(), Role::Owner));
    v
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.sync_org("acme", members(50, "own")).expect("sync");
    let owner = Actor::new("acme", "own");
    let user = Actor::new("acme", "m0");
    let ids: Vec<TokenId> = (0..100)
        .map(|_| {
            store
                .generate(&user, Default::default())
                .expect("generate")
                .info
                .id
        })
        .collect();
    let mut g = c.benchmark_group("reads");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("get", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(store.get(&user, &ids[i]).expect("get"))
        })
    });
    g.bench_function("list_own (100 tokens)", |b| {
        b.iter(|| black_box(store.list_own(&user).expect("list")))
    });
    g.bench_function("list_own_page (20 of 100, from the middle)", |b| {
        b.iter(|| {
            black_box(
                store
                    .list_own_page(&user, Page::new().after(ids[50]).limit(20))
                    .expect("page"),
            )
        })
    });
    let mid = store.audit(&owner, 100).expect("audit")[50].seq;
    g.bench_function("audit_page (20, from the middle)", |b| {
        b.iter(|| {
            black_box(
                store
                    .audit_page(&owner, Page::new().after(mid).limit(20))
                    .expect("audit"),
            )
        })
    });
    g.bench_function("set_label (durable)", |b| {
        b.iter(|| black_box(store.set_label(&user, &ids[0], Some("x")).expect("label")))
    });
    g.bench_function("sync_org, nothing to change (50 members)", |b| {
        let list = members(50, "own");
        b.iter(|| black_box(store.sync_org("acme", list.clone()).expect("sync")))
    });
    g.bench_function("sync_org, one role back and forth (50 members)", |b| {
        let (a, mut z) = (members(50, "own"), members(50, "own"));
        z[1].1 = Role::Admin;
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            let list = if flip { z.clone() } else { a.clone() };
            black_box(store.sync_org("acme", list).expect("sync"))
        })
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
