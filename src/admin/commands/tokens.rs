//! The `token` commands, `exchange` and `verify`: issuing, listing, showing and revoking tokens, and reading a token from the command line or standard input.

use std::io::Read;

use crate::{GenerateOptions, Grace, IssuedToken, Page, RevokeScope, TokenInfo, TokenStore};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::admin::cli::{IssueArgs, TokenCommand};
use crate::admin::error::CliError;
use crate::admin::output::{plural, when, Report, Table};
use crate::admin::parse::format_time;

use super::*;

pub(super) fn options(a: &IssueArgs) -> GenerateOptions {
    GenerateOptions {
        label: a.label.clone(),
        scopes: a.scopes.clone(),
        expires_in: a.expires_in,
    }
}

pub(super) fn token(store: &TokenStore, cmd: &TokenCommand) -> Result<Report, CliError> {
    match cmd {
        TokenCommand::Generate { actor, issue } => {
            let t = store.generate(actor, options(issue))?;
            Ok(issued(&t))
        }
        TokenCommand::Assign {
            actor,
            to,
            issue,
            pending: true,
        } => {
            let i = store.assign_pending(actor, to, options(issue))?;
            Ok(Report::new(
                json!({
                    "id": i.id.to_string(),
                    "user": i.user,
                    "role": i.role_at_issue,
                    "scopes": i.scopes,
                    "expires_at": i.expires_at,
                    "state": i.state.as_str(),
                }),
                format!(
                    "Refresh token {} assigned to {}/{}, pending: no secret is shown here; \
                     {} claims it with `tokenvault token claim --as {}/{} {}`.",
                    i.id, i.org, i.user, i.user, i.org, i.user, i.id
                ),
            ))
        }
        TokenCommand::Assign {
            actor, to, issue, ..
        } => {
            let t = store.assign(actor, to, options(issue))?;
            Ok(issued(&t))
        }
        TokenCommand::Claim { actor, id } => {
            let t = store.claim(actor, id)?;
            Ok(issued(&t))
        }
        TokenCommand::List {
            actor,
            all,
            after,
            limit,
        } => {
            let mut page = Page::new();
            if let Some(c) = after {
                page = page.after(*c);
            }
            if let Some(n) = limit {
                page = page.limit(usize::try_from(*n).unwrap_or(usize::MAX));
            }
            let paged = if *all {
                store.list_org_page(actor, page)?
            } else {
                store.list_own_page(actor, page)?
            };
            let tokens = paged.items;
            let mut json = json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() });
            if limit.is_some() {
                json["next"] = json!(paged.next.map(|c| c.to_string()));
            }
            let mut human = if tokens.is_empty() {
                "No tokens.".to_string()
            } else {
                token_table(&tokens)
            };
            if let Some(c) = paged.next {
                human.push_str(&format!("\nMore: --after {c}"));
            }
            Ok(Report::new(json, human))
        }
        TokenCommand::Show { actor, id } => {
            let t = store.get(actor, id)?;
            Ok(Report::new(
                token_json(&t),
                token_table(std::slice::from_ref(&t)),
            ))
        }
        TokenCommand::Label { actor, id, label } => {
            let t = store.set_label(actor, id, Some(label))?;
            Ok(Report::new(
                token_json(&t),
                format!("Token {id} is now labelled {label:?}."),
            ))
        }
        TokenCommand::Rotate { actor, id, grace } => {
            let grace = grace.map_or(Grace::DEFAULT, Grace::from);
            let r = store.rotate(actor, id, grace)?;
            let mut report = issued(&r.issued);
            report.json["replaces"] = json!(r.replaces.to_string());
            report.json["old_expires_at"] = json!(r.old_expires_at);
            report.human = format!(
                "{}\nIt replaces token {}, which stops working {}.",
                report.human,
                r.replaces,
                format_time(r.old_expires_at)
            );
            Ok(report)
        }
        TokenCommand::Disable { actor, id } => {
            let t = store.disable(actor, id)?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "state": t.state.as_str() }),
                format!(
                    "Token {id} is {}: it and its access tokens are refused until enabled.",
                    t.state
                ),
            ))
        }
        TokenCommand::Enable { actor, id } => {
            let t = store.enable(actor, id)?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "state": t.state.as_str() }),
                format!("Token {id} is {}.", t.state),
            ))
        }
        TokenCommand::Revoke { actor, id, reason } => {
            store.revoke(actor, id, reason.as_deref())?;
            Ok(Report::new(
                json!({ "id": id.to_string(), "revoked": true }),
                format!("Revoked token {id}; it and every access token derived from it are rejected from now on."),
            ))
        }
        TokenCommand::RevokeAll {
            actor,
            user,
            org: _,
            before,
        } => {
            let scope = match user {
                Some(u) => RevokeScope::Member(u.clone()),
                None => RevokeScope::Org,
            };
            let n = store.revoke_all(actor, scope, *before)?;
            let whose = match user {
                Some(u) => format!("of {}/{u}", actor.org),
                None => format!("of the organization {}", actor.org),
            };
            let cutoff = match before {
                Some(t) => format!(" issued before {}", format_time(*t)),
                None => String::new(),
            };
            Ok(Report::new(
                json!({ "revoked": n, "org": actor.org, "user": user, "before": before }),
                format!(
                    "Revoked {} {whose}{cutoff}.",
                    plural(n as u64, "refresh token", "refresh tokens")
                ),
            ))
        }
    }
}

pub(super) fn issued(t: &IssuedToken) -> Report {
    let i = &t.info;
    let secret = t.token.expose();
    let json = json!({
        "id": i.id.to_string(),
        "token": secret,
        "user": i.user,
        "role": i.role_at_issue,
        "scopes": i.scopes,
        "expires_at": i.expires_at,
    });
    let by = if i.created_by == i.user {
        String::new()
    } else {
        format!(", assigned by {}", i.created_by)
    };
    let human = format!(
        "Refresh token {} for {}/{} ({}{by}), scopes {}, expires {}.\n\
         It is shown only this once; store it now:\n{secret}",
        i.id,
        i.org,
        i.user,
        i.role_at_issue,
        i.scopes.join(","),
        when(i.expires_at, "never"),
    );
    Report::new(json, human)
}

pub(super) fn token_json(t: &TokenInfo) -> Value {
    json!({
        "id": t.id.to_string(),
        "user": t.user,
        "role": t.role_at_issue,
        "scopes": t.scopes,
        "label": t.label,
        "created_at": t.created_at,
        "created_by": t.created_by,
        "expires_at": t.expires_at,
        "last_refresh": t.last_refresh,
        "last_used_ip": t.last_used_ip.map(|ip| ip.to_string()),
        "last_used_agent": t.last_used_agent,
        "state": t.state.as_str(),
    })
}

pub(super) fn token_table(tokens: &[TokenInfo]) -> String {
    let mut table = Table::new([
        "ID",
        "USER",
        "ROLE",
        "STATE",
        "LABEL",
        "CREATED",
        "BY",
        "EXPIRES",
        "LAST REFRESH",
        "SCOPES",
    ]);
    for t in tokens {
        table.row(vec![
            t.id.to_string(),
            t.user.clone(),
            t.role_at_issue.to_string(),
            t.state.as_str().to_string(),
            t.label.clone().unwrap_or_else(|| "-".into()),
            format_time(t.created_at),
            t.created_by.clone(),
            when(t.expires_at, "never"),
            when(t.last_refresh, "never"),
            t.scopes.join(","),
        ]);
    }
    table.render()
}

// ----- exchange and verification -----

/// Most a token read from standard input may be; longer input is refused.
pub const MAX_STDIN: u64 = 64 * 1024;

/// The token argument, or standard input's content for `-` (surrounding
/// whitespace and the trailing newline removed).
pub(super) fn token_text(
    arg: &str,
    caller: &mut Caller<'_>,
) -> Result<Zeroizing<String>, CliError> {
    if arg != "-" {
        return Ok(Zeroizing::new(arg.to_string()));
    }
    let raw = match caller {
        Caller::Local => read_stdin(&mut std::io::stdin().lock())?,
        Caller::Remote(ask) => ask()?,
    };
    if raw.len() as u64 > MAX_STDIN {
        return Err(CliError::new(
            "malformed",
            "standard input is far longer than a token",
        ));
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| CliError::new("malformed", "standard input is not text"))?
        .trim();
    if text.is_empty() {
        return Err(CliError::new("malformed", "standard input held no token"));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// Reads at most [`MAX_STDIN`] + 1 bytes: enough to tell a token from
/// input far longer than one.
pub fn read_stdin(input: &mut dyn Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut raw = Zeroizing::new(Vec::new());
    input.take(MAX_STDIN + 1).read_to_end(&mut raw)?;
    Ok(raw)
}

pub(super) fn exchange(
    store: &TokenStore,
    arg: &str,
    caller: &mut Caller<'_>,
) -> Result<Report, CliError> {
    let refresh = token_text(arg, caller)?;
    let g = store.exchange(&refresh)?;
    let json = json!({
        "data": {
            "access_token": g.access_token.expose(),
            "expires_at": g.expires_at,
            "issued_at": g.issued_at,
            "refresh_token": g.refresh_token.expose(),
            "type": g.token_type,
        }
    });
    let human = format!(
        "Access token ({}) from refresh token {}, issued {}, expires {}:\n{}",
        g.token_type,
        g.refresh_id,
        format_time(g.issued_at),
        format_time(g.expires_at),
        g.access_token.expose()
    );
    Ok(Report::new(json, human))
}

pub(super) fn verify(
    store: &TokenStore,
    arg: &str,
    scope: Option<&str>,
    caller: &mut Caller<'_>,
) -> Result<Report, CliError> {
    let access = token_text(arg, caller)?;
    let p = match scope {
        Some(s) => store.authorize(&access, s)?,
        None => store.verify(&access)?,
    };
    let scopes = p.scopes.to_vec();
    let json = json!({
        "org": &*p.org,
        "user": &*p.user,
        "role": p.role,
        "scopes": scopes,
        "refresh_id": p.refresh_id.to_string(),
        "expires_at": p.expires_at,
    });
    let granted = match scope {
        Some(s) => format!(" It grants `{s}`."),
        None => String::new(),
    };
    let human = format!(
        "Valid: {}/{} ({}), scopes {}; from refresh token {}; expires {}.{granted}",
        p.org,
        p.user,
        p.role,
        if scopes.is_empty() {
            "(none)".to_string()
        } else {
            scopes.join(",")
        },
        p.refresh_id,
        format_time(p.expires_at),
    );
    Ok(Report::new(json, human))
}

// ----- operations -----
