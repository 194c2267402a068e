//! `audit`, `purge`, `check` and `stats`.

use std::io::IsTerminal;
use std::time::Duration;

use crate::{Page, TokenStore};
use serde_json::json;

use crate::admin::error::CliError;
use crate::admin::output::{plural, Report, Table};
use crate::admin::parse::format_time;

/// Events shown by `audit` without `--limit`.
pub(super) const AUDIT_DEFAULT_LIMIT: usize = 50;

pub(super) fn audit(
    store: &TokenStore,
    actor: &crate::Actor,
    limit: Option<u64>,
    after: Option<u64>,
) -> Result<Report, CliError> {
    let n = limit.map_or(AUDIT_DEFAULT_LIMIT, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let mut page = Page::new().limit(n);
    if let Some(c) = after {
        page = page.after(c);
    }
    let paged = store.audit_page(actor, page)?;
    let events = paged.items;
    // `AuditEvent`'s own serialization is the CLI's shape.
    let list = serde_json::to_value(&events)
        .map_err(|e| CliError::new("io", format!("cannot encode the audit events: {e}")))?;
    let mut table = Table::new(["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]);
    for e in &events {
        table.row(vec![
            e.seq.to_string(),
            format_time(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone().unwrap_or_else(|| "-".into()),
            if e.count > 1 {
                format!(
                    "{} (x{}, last {})",
                    e.outcome,
                    e.count,
                    format_time(e.last_at)
                )
            } else {
                e.outcome.clone()
            },
        ]);
    }
    let mut human = if events.is_empty() {
        "No audit events.".to_string()
    } else {
        table.render()
    };
    if let (Some(c), Some(_)) = (paged.next, limit) {
        human.push_str(&format!("\nMore: --after {c}"));
    }
    let mut json = json!({ "events": list });
    if limit.is_some() {
        json["next"] = json!(paged.next);
    }
    Ok(Report::new(json, human))
}

pub(super) fn purge(store: &TokenStore, batch: usize, local: bool) -> Result<Report, CliError> {
    let bar = (local && std::io::stderr().is_terminal()).then(|| {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} purging: {pos} records removed, batch {msg} [{elapsed}]",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let (mut access, mut refresh, mut events, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let result = loop {
        let r = match store.purge_expired(batch) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        batches += 1;
        access += r.access_removed;
        refresh += r.refresh_removed;
        events += r.events_removed;
        if let Some(b) = &bar {
            b.set_position(access + refresh + events);
            b.set_message(batches.to_string());
        }
        // A batch that removed nothing cannot make progress: stop there.
        if !r.more || r.access_removed + r.refresh_removed + r.events_removed == 0 {
            break Ok(());
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result?;
    Ok(Report::new(
        json!({
            "access_removed": access,
            "refresh_removed": refresh,
            "events_removed": events,
            "batches": batches
        }),
        format!(
            "Purged {}, {} and {} in {}.",
            plural(access, "access record", "access records"),
            plural(refresh, "refresh record", "refresh records"),
            plural(events, "audit event", "audit events"),
            plural(batches, "batch", "batches"),
        ),
    ))
}

pub(super) fn check(store: &TokenStore) -> Result<Report, CliError> {
    let r = store.check_integrity()?;
    if !r.is_clean() {
        let mut e = CliError::new(
            "corrupt",
            format!(
                "the integrity check found {}",
                plural(r.problems.len() as u64, "problem", "problems")
            ),
        );
        e.details = r.problems;
        return Err(e);
    }
    Ok(Report::new(
        json!({
            "clean": true,
            "members": r.members,
            "refresh_tokens": r.refresh_tokens,
            "access_tokens": r.access_tokens,
            "events": r.events,
            "problems": [],
        }),
        format!(
            "Integrity check passed: {}, {}, {} and {} checked, no problems.",
            plural(r.members, "member", "members"),
            plural(r.refresh_tokens, "refresh record", "refresh records"),
            plural(r.access_tokens, "access record", "access records"),
            plural(r.events, "audit event", "audit events"),
        ),
    ))
}

pub(super) fn stats(store: &TokenStore) -> Result<Report, CliError> {
    let s = store.stats()?;
    let json = json!({
        "orgs": s.orgs,
        "members": s.members,
        "tokens": { "active": s.active, "revoked": s.revoked, "expired": s.expired },
        "access_tokens": s.access_tokens,
        "disk_bytes": s.disk_bytes,
    });
    let mut table = Table::new(["organizations", &s.orgs.to_string()]);
    table.row(vec!["members".into(), s.members.to_string()]);
    table.row(vec!["tokens active".into(), s.active.to_string()]);
    table.row(vec!["tokens revoked".into(), s.revoked.to_string()]);
    table.row(vec!["tokens expired".into(), s.expired.to_string()]);
    table.row(vec![
        "access tokens held".into(),
        s.access_tokens.to_string(),
    ]);
    table.row(vec![
        "size on disk".into(),
        format!("{} bytes", s.disk_bytes),
    ]);
    Ok(Report::new(json, table.render()))
}
