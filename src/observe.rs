//! Counters and histograms through the [`metrics`](https://docs.rs/metrics)
//! facade (cargo feature `metrics`): the host installs a recorder, and so
//! picks the exporter (`tokenvault serve --metrics-listen` installs the
//! Prometheus one). Without the feature every hook here is empty.
//!
//! Install the recorder **before the first store call**: each hook
//! registers its metric once, on first use, and keeps the handle (so the
//! verify path never looks a metric up by name); a handle registered while
//! no recorder was installed records nothing for the life of the process.
//!
//! No label value comes from a caller: outcomes are [`Error::kind`]
//! names, calls are a fixed list, HTTP routes are route templates and
//! statuses numbers. No token, secret, id or name is ever a label.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `tokenvault_verifications_total` | counter | `outcome` | access-token verifications (`verify`, `authorize`, the HTTP front's bearer check), by `ok` or error kind |
//! | `tokenvault_exchanges_total` | counter | `outcome` | refresh-token exchanges, by `ok` or error kind |
//! | `tokenvault_management_calls_total` | counter | `call`, `outcome` | management calls (generate, assign, revoke, member changes, ...), by `ok` or error kind |
//! | `tokenvault_durable_wait_seconds` | histogram | | how long a durable call waited for its sync (group commit included) |
//! | `tokenvault_group_commit_batch_size` | histogram | | batches made durable by one sync |
//! | `tokenvault_sync_seconds` | histogram | | one sync of the storage (fsync/fdatasync, or a database commit) |
//! | `tokenvault_purge_runs_total` | counter | | calls of `purge_expired` (janitor included) |
//! | `tokenvault_purged_records_total` | counter | `record` | records purged: `access`, `refresh`, `event` |
//! | `tokenvault_purge_more` | gauge | | 1 when the last purge left work for the next one |
//!
//! The HTTP front adds `tokenvault_http_requests_total{route,status}`,
//! `tokenvault_http_request_seconds{route}`,
//! `tokenvault_http_connections_open` and
//! `tokenvault_http_connections_refused_total{reason}`; the gauges of live
//! tokens and of a replica's freshness are set from
//! [`TokenStore::stats`](crate::TokenStore::stats) and `sync_status` when
//! scraped (`docs/operations.md` lists them all).

#[cfg(feature = "metrics")]
use std::sync::OnceLock;
use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

#[cfg(feature = "metrics")]
use crate::error::Error;
use crate::error::Result;

/// The error kinds, in the order of their handles; `ok` first.
#[cfg(feature = "metrics")]
const OUTCOMES: [&str; 15] = [
    "ok",
    "malformed",
    "invalid_token",
    "expired",
    "revoked",
    "forbidden",
    "insufficient_scope",
    "not_found",
    "conflict",
    "usage",
    "limit",
    "key_mismatch",
    "corrupt",
    "io",
    "unavailable",
];

/// The management calls counted, by name.
#[derive(Clone, Copy)]
pub(crate) enum Call {
    Generate,
    Assign,
    Revoke,
    RevokeRefresh,
    RevokeAccess,
    RevokeAll,
    AddMember,
    SetRole,
    TransferOwnership,
    RemoveMember,
    SyncOrg,
    SetLabel,
}

#[cfg(feature = "metrics")]
const CALLS: [&str; 12] = [
    "generate",
    "assign",
    "revoke",
    "revoke_refresh",
    "revoke_access",
    "revoke_all",
    "add_member",
    "set_role",
    "transfer_ownership",
    "remove_member",
    "sync_org",
    "set_label",
];

#[cfg(feature = "metrics")]
fn outcome_of<T>(r: &Result<T>) -> usize {
    match r {
        Ok(_) => 0,
        Err(e) => outcome_of_error(e),
    }
}

#[cfg(feature = "metrics")]
#[cold]
fn outcome_of_error(e: &Error) -> usize {
    let kind = e.kind();
    OUTCOMES.iter().position(|k| *k == kind).unwrap_or(0)
}

/// One counter per outcome, each registered on its first use.
#[cfg(feature = "metrics")]
struct ByOutcome {
    name: &'static str,
    cells: [OnceLock<metrics::Counter>; OUTCOMES.len()],
}

#[cfg(feature = "metrics")]
impl ByOutcome {
    const fn new(name: &'static str) -> Self {
        ByOutcome {
            name,
            cells: [const { OnceLock::new() }; OUTCOMES.len()],
        }
    }

    #[inline]
    fn add(&self, i: usize) {
        self.cells[i]
            .get_or_init(|| metrics::counter!(self.name, "outcome" => OUTCOMES[i]))
            .increment(1);
    }
}

#[cfg(feature = "metrics")]
static VERIFICATIONS: ByOutcome = ByOutcome::new("tokenvault_verifications_total");
#[cfg(feature = "metrics")]
static EXCHANGES: ByOutcome = ByOutcome::new("tokenvault_exchanges_total");
#[cfg(feature = "metrics")]
static MANAGEMENT: [[OnceLock<metrics::Counter>; OUTCOMES.len()]; CALLS.len()] =
    [const { [const { OnceLock::new() }; OUTCOMES.len()] }; CALLS.len()];

#[cfg(feature = "metrics")]
struct Commit {
    durable_wait: metrics::Histogram,
    batch: metrics::Histogram,
    sync: metrics::Histogram,
}

#[cfg(feature = "metrics")]
fn commit_handles() -> &'static Commit {
    static H: OnceLock<Commit> = OnceLock::new();
    H.get_or_init(|| Commit {
        durable_wait: metrics::histogram!("tokenvault_durable_wait_seconds"),
        batch: metrics::histogram!("tokenvault_group_commit_batch_size"),
        sync: metrics::histogram!("tokenvault_sync_seconds"),
    })
}

/// Counts a verification that gave an answer (`Ok(None)`, a replica's
/// miss to be read through, is counted when the read-through answers).
#[inline(always)]
pub(crate) fn verification<T>(r: Result<Option<T>>) -> Result<Option<T>> {
    #[cfg(feature = "metrics")]
    if !matches!(r, Ok(None)) {
        VERIFICATIONS.add(outcome_of(&r));
    }
    r
}

/// Counts an exchange.
#[inline]
pub(crate) fn exchange<T>(r: Result<T>) -> Result<T> {
    #[cfg(feature = "metrics")]
    EXCHANGES.add(outcome_of(&r));
    r
}

/// Counts a refused exchange: the check of a refresh token a front makes
/// before [`exchange`] (which counts the rest).
#[inline]
pub(crate) fn exchange_refused<T>(r: Result<T>) -> Result<T> {
    #[cfg(feature = "metrics")]
    if r.is_err() {
        EXCHANGES.add(outcome_of(&r));
    }
    r
}

/// Counts a management call.
#[inline]
pub(crate) fn call<T>(call: Call, r: Result<T>) -> Result<T> {
    #[cfg(feature = "metrics")]
    {
        let (c, o) = (call as usize, outcome_of(&r));
        MANAGEMENT[c][o]
            .get_or_init(|| {
                metrics::counter!("tokenvault_management_calls_total",
                    "call" => CALLS[c], "outcome" => OUTCOMES[o])
            })
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = call;
    r
}

/// A start time for [`durable_wait`], read only when metrics are on.
#[derive(Clone, Copy)]
pub(crate) struct Started {
    #[cfg(feature = "metrics")]
    at: Instant,
}

#[inline]
pub(crate) fn start() -> Started {
    Started {
        #[cfg(feature = "metrics")]
        at: Instant::now(),
    }
}

/// Records how long a durable call waited for its sync.
#[inline]
pub(crate) fn durable_wait(started: Started) {
    #[cfg(feature = "metrics")]
    commit_handles()
        .durable_wait
        .record(started.at.elapsed().as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = started;
}

/// Records one sync of the storage and how many batches it made durable.
#[inline]
pub(crate) fn synced(took: Duration, batches: u64) {
    #[cfg(feature = "metrics")]
    {
        let h = commit_handles();
        h.sync.record(took.as_secs_f64());
        h.batch.record(batches as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (took, batches);
}

/// Records one purge: the records it removed and whether more remain.
#[inline]
pub(crate) fn purged(access: u64, refresh: u64, events: u64, more: bool) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("tokenvault_purge_runs_total").increment(1);
        metrics::counter!("tokenvault_purged_records_total", "record" => "access")
            .increment(access);
        metrics::counter!("tokenvault_purged_records_total", "record" => "refresh")
            .increment(refresh);
        metrics::counter!("tokenvault_purged_records_total", "record" => "event").increment(events);
        metrics::gauge!("tokenvault_purge_more").set(if more { 1.0 } else { 0.0 });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (access, refresh, events, more);
}

/// Gives every metric of the crate its help text (the `# HELP` line of a
/// Prometheus scrape). Call it once, after installing the recorder; it
/// records nothing and never blocks.
///
/// ```
/// // With no recorder installed this does nothing.
/// tokenvault::describe_metrics();
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tokenvault_verifications_total",
        "Access-token verifications, by outcome (ok or error kind)"
    );
    describe_counter!(
        "tokenvault_exchanges_total",
        "Refresh-token exchanges, by outcome (ok or error kind)"
    );
    describe_counter!(
        "tokenvault_management_calls_total",
        "Management calls, by call and outcome (ok or error kind)"
    );
    describe_histogram!(
        "tokenvault_durable_wait_seconds",
        Unit::Seconds,
        "Time a durable call waited for its sync"
    );
    describe_histogram!(
        "tokenvault_group_commit_batch_size",
        Unit::Count,
        "Batches made durable by one sync"
    );
    describe_histogram!(
        "tokenvault_sync_seconds",
        Unit::Seconds,
        "One sync of the storage"
    );
    describe_counter!("tokenvault_purge_runs_total", "Purges run");
    describe_counter!(
        "tokenvault_purged_records_total",
        "Records purged, by record kind"
    );
    describe_gauge!(
        "tokenvault_purge_more",
        "1 when the last purge left work for the next one"
    );
    describe_counter!(
        "tokenvault_http_requests_total",
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        "tokenvault_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_gauge!(
        "tokenvault_http_connections_open",
        "HTTP connections being served"
    );
    describe_counter!(
        "tokenvault_http_connections_refused_total",
        "HTTP connections answered 503 and closed, by reason (full, peer)"
    );
    describe_gauge!("tokenvault_tokens", "Refresh tokens held, by state");
    describe_gauge!("tokenvault_access_tokens", "Access records held");
    describe_gauge!("tokenvault_members", "Members");
    describe_gauge!("tokenvault_disk_bytes", "Bytes the store takes on disk");
    describe_gauge!(
        "tokenvault_replica_staleness_seconds",
        "Time since the replica's last successful sync"
    );
    describe_gauge!(
        "tokenvault_replica_fresh",
        "1 while the replica is within its staleness bound"
    );
    describe_gauge!(
        "tokenvault_replica_connected",
        "1 while the replica's change-feed connection is up"
    );
    describe_gauge!(
        "tokenvault_replica_applied_seq",
        "Change-log sequence number the replica has applied"
    );
    describe_counter!(
        "tokenvault_replica_reconnects_total",
        "Re-established change-feed connections"
    );
    describe_counter!(
        "tokenvault_replica_read_throughs_total",
        "Database reads for tokens the replica did not hold"
    );
    describe_counter!(
        "tokenvault_replica_reloads_total",
        "Full snapshot reloads after falling behind the change log"
    );
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_own_outcome() {
        let errors = [
            Error::Malformed("x"),
            Error::InvalidToken,
            Error::Expired,
            Error::Revoked,
            Error::Forbidden(String::new()),
            Error::InsufficientScope(String::new()),
            Error::NotFound(String::new()),
            Error::Conflict(String::new()),
            Error::InvalidArgument(String::new()),
            Error::Limit(String::new()),
            Error::KeyMismatch,
            Error::Corrupt(String::new()),
            Error::Unavailable(String::new()),
        ];
        for e in errors {
            let i = outcome_of_error(&e);
            assert_ne!(i, 0, "{} counted as ok", e.kind());
            assert_eq!(OUTCOMES[i], e.kind());
        }
        assert_eq!(outcome_of::<()>(&Ok(())), 0);
    }
}
