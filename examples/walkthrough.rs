//! The seed story end to end on an embedded store, narrated step by step:
//! `cargo run --release --example walkthrough`.

use tokenvault::{Actor, Config, Error, GenerateOptions, Role};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenvault.db");
    let store = Config::new(&path).open()?;
    println!(
        "1. Opened a store at {} (key file beside it, mode 0600).",
        path.display()
    );

    store.add_member("acme", "olivia", Role::Owner)?;
    store.add_member("acme", "adam", Role::Admin)?;
    store.add_member("acme", "uma", Role::User)?;
    println!("2. The host added olivia (Owner), adam (Admin) and uma (User) to org acme.");

    let olivia = Actor::new("acme", "olivia");
    let adam = Actor::new("acme", "adam");
    let uma = Actor::new("acme", "uma");

    let own = store.generate(&uma, GenerateOptions::default().label("laptop"))?;
    println!(
        "3. uma generated her own refresh token on her profile page: id {} (secret shown once: {}…).",
        own.info.id,
        &own.token.expose()[..8]
    );

    let for_adam = store.assign(
        &olivia,
        "adam",
        GenerateOptions::default().label("terraform"),
    )?;
    let for_uma = store.assign(&olivia, "uma", GenerateOptions::default().label("ci"))?;
    println!(
        "4. olivia (Owner) assigned tokens {} to adam and {} to uma.",
        for_adam.info.id, for_uma.info.id
    );

    let listed = store.list_own(&uma)?;
    println!("5. uma's profile lists {} tokens:", listed.len());
    for t in &listed {
        println!(
            "     {}  label={:<10} created_by={:<7} scopes={}",
            t.id,
            t.label.as_deref().unwrap_or("-"),
            t.created_by,
            t.scopes.join(",")
        );
    }
    match store.list_org(&adam) {
        Err(Error::Forbidden(why)) => {
            println!("6. adam (Admin) may not list the org's tokens: {why}.")
        }
        other => return Err(format!("expected Forbidden, got {other:?}").into()),
    }
    println!(
        "   olivia lists all {} tokens of acme.",
        store.list_org(&olivia)?.len()
    );

    let grant = store.exchange(for_uma.token.expose())?;
    println!(
        "7. uma's client exchanged the refresh token: type {}, issued_at {}, expires_at {}.",
        grant.token_type, grant.issued_at, grant.expires_at
    );
    let who = store.verify(grant.access_token.expose())?;
    println!(
        "8. The API verified the access token: {}/{} ({}), scopes {:?}.",
        who.org, who.user, who.role, who.scopes
    );
    match store.authorize(grant.access_token.expose(), "user-write") {
        Err(Error::InsufficientScope(s)) => {
            println!("9. A User token is refused the Admin scope `{s}`.")
        }
        other => return Err(format!("expected InsufficientScope, got {other:?}").into()),
    }
    let second = store.exchange(for_uma.token.expose())?;
    store.revoke(&olivia, &for_uma.info.id, Some("rotated"))?;
    println!("10. olivia revoked uma's assigned token.");
    for (n, g) in [&grant, &second].iter().enumerate() {
        match store.verify(g.access_token.expose()) {
            Err(Error::Revoked) => {
                println!("    derived access token #{} is rejected: revoked.", n + 1)
            }
            other => return Err(format!("expected Revoked, got {other:?}").into()),
        }
    }
    let adam_grant = store.exchange(for_adam.token.expose())?;
    store.set_role("acme", "adam", Role::User)?;
    match store.authorize(adam_grant.access_token.expose(), "user-write") {
        Err(Error::InsufficientScope(_)) => {
            println!("11. adam was demoted to User: his token lost `user-write` at once.")
        }
        other => return Err(format!("expected InsufficientScope, got {other:?}").into()),
    }
    // The lifecycle beyond issue and revoke (docs/lifecycle.md).
    let pending =
        store.assign_pending(&olivia, "uma", GenerateOptions::default().label("deploy"))?;
    println!(
        "12. olivia assigned token {} to uma pending: state {}, no secret shown to olivia.",
        pending.id, pending.state
    );
    let claimed = store.claim(&uma, &pending.id)?;
    println!(
        "13. uma claimed it from her profile: its secret ({}…) is shown to her, once.",
        &claimed.token.expose()[..8]
    );
    let rotated = store.rotate(&uma, &claimed.info.id, std::time::Duration::from_secs(3600))?;
    println!(
        "14. uma rotated it: new token {}; the old one works until {} (one hour of overlap).",
        rotated.issued.info.id, rotated.old_expires_at
    );
    store.disable(&olivia, &own.info.id)?;
    match store.exchange(own.token.expose()) {
        Err(Error::Disabled) => println!(
            "15. olivia disabled uma's laptop token: it is refused (disabled) until enabled."
        ),
        other => return Err(format!("expected Disabled, got {other:?}").into()),
    }
    store.enable(&olivia, &own.info.id)?;
    // The host names the client (the HTTP front passes the peer address
    // and the User-Agent): lists show it as the token's last use.
    let laptop = tokenvault::ClientInfo::new(Some([192, 0, 2, 15].into()), Some("uma-laptop/2.1"));
    store.exchange_from::<&str>(own.token.expose(), None, &laptop)?;
    let seen = store.get(&uma, &own.info.id)?;
    println!(
        "    olivia enabled it again: it exchanges; last used from {} by {}.",
        seen.last_used_ip.map_or("-".into(), |ip| ip.to_string()),
        seen.last_used_agent.as_deref().unwrap_or("-")
    );
    // Rotation on use (RFC 9700): each OAuth refresh returns a new refresh
    // token; presenting a spent one again revokes the whole family.
    store.set_org_policy(
        &olivia,
        tokenvault::OrgPolicy::default().rotate_on_use(true),
    )?;
    let app = store.generate(&uma, GenerateOptions::default().label("mobile app"))?;
    let refreshed = store.oauth_refresh(app.token.expose(), &[] as &[&str])?;
    let next = refreshed
        .refresh_token
        .ok_or("expected a new refresh token")?;
    println!(
        "    olivia turned on rotation on use: uma's app refreshed and got a new refresh token ({}…).",
        &next.expose()[..8]
    );
    match store.oauth_refresh(app.token.expose(), &[] as &[&str]) {
        Err(Error::Revoked) if matches!(store.exchange(next.expose()), Err(Error::Revoked)) => {
            println!("    the spent token came back (stolen?): its whole family is revoked.")
        }
        other => return Err(format!("expected reuse detection, got {other:?}").into()),
    }

    println!("16. The audit trail, newest first:");
    for e in store.audit(&olivia, 6)? {
        println!(
            "     #{:<3} {:<8} {:<18} {:<40} {}",
            e.seq,
            e.actor,
            e.action,
            e.target.unwrap_or_default(),
            e.outcome
        );
    }
    let report = store.check_integrity()?;
    println!(
        "17. Integrity check: {} members, {} refresh and {} access records, {} problems.",
        report.members,
        report.refresh_tokens,
        report.access_tokens,
        report.problems.len()
    );
    Ok(())
}
