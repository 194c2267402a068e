//! `tokenvault demo`: the seed story on a temporary store, narrated step by
//! step with the command that does the same on a real store. Each step
//! checks its outcome; a surprise fails the demo.
#![allow(missing_docs)]

use crate::{Actor, Config, Error, GenerateOptions, Role, TokenStore};
use serde_json::json;

use super::error::CliError;
use super::output::Report;

struct Story {
    steps: Vec<String>,
}

impl Story {
    fn say(&mut self, text: String) {
        let n = self.steps.len() + 1;
        self.steps.push(format!("{n:>2}. {text}"));
    }
}

/// The step's call must fail with `kind`; anything else stops the demo.
fn refused<T>(step: &str, r: Result<T, Error>, kind: &str) -> Result<Error, CliError> {
    match r {
        Err(e) if e.kind() == kind => Ok(e),
        Err(e) => Err(CliError::new(
            e.kind(),
            format!("demo step `{step}`: expected {kind}, got: {e}"),
        )),
        Ok(_) => Err(CliError::new(
            "conflict",
            format!("demo step `{step}`: expected {kind}, but the call succeeded"),
        )),
    }
}

/// `tvr_3kQ…`: enough to recognise a token, not enough to use it.
fn short(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    format!("{head}…")
}

pub fn run() -> Result<Report, CliError> {
    let store = Config::temporary().open()?;
    let mut s = Story { steps: Vec::new() };
    story(&store, &mut s)?;
    let human = format!(
        "The seed story on a temporary store (deleted afterwards):\n\n{}\n",
        s.steps.join("\n")
    );
    Ok(Report::new(json!({ "steps": s.steps }), human))
}

fn story(store: &TokenStore, s: &mut Story) -> Result<(), CliError> {
    s.say("Opened a temporary store with a random key (on disk: `tokenvault init`).".into());

    store.add_member("acme", "olivia", Role::Owner)?;
    store.add_member("acme", "adam", Role::Admin)?;
    store.add_member("acme", "uma", Role::User)?;
    s.say(
        "The host added olivia (owner), adam (admin) and uma (user) to org acme \
         (`tokenvault member add acme olivia owner`, …)."
            .into(),
    );
    let olivia = Actor::new("acme", "olivia");
    let adam = Actor::new("acme", "adam");
    let uma = Actor::new("acme", "uma");

    let own = store.generate(&uma, GenerateOptions::default().label("laptop"))?;
    s.say(format!(
        "uma generated her own refresh token {} labelled laptop; the secret {} is shown once \
         (`tokenvault token generate --as acme/uma --label laptop`).",
        own.info.id,
        short(own.token.expose())
    ));

    let for_adam = store.assign(
        &olivia,
        "adam",
        GenerateOptions::default().label("terraform"),
    )?;
    let for_uma = store.assign(&olivia, "uma", GenerateOptions::default().label("ci"))?;
    s.say(format!(
        "olivia, the Owner, assigned token {} to adam and {} to uma \
         (`tokenvault token assign --as acme/olivia --to uma --label ci`).",
        for_adam.info.id, for_uma.info.id
    ));

    let e = refused(
        "adam assigns",
        store.assign(&adam, "uma", GenerateOptions::default()),
        "forbidden",
    )?;
    s.say(format!("adam, an Admin, may not assign tokens: {e}."));

    let listed = store.list_own(&uma)?;
    let assigned = listed
        .iter()
        .any(|t| t.id == for_uma.info.id && t.created_by == "olivia");
    if listed.len() != 2 || !assigned {
        return Err(CliError::new(
            "conflict",
            "demo: uma's list should hold her own token and the one olivia assigned",
        ));
    }
    s.say(format!(
        "uma's profile lists {} tokens, her own and the one olivia assigned \
         (`tokenvault token list --as acme/uma`).",
        listed.len()
    ));

    let e = refused("adam lists the org", store.list_org(&adam), "forbidden")?;
    let all = store.list_org(&olivia)?;
    s.say(format!(
        "adam may not list the org's tokens ({e}); olivia lists all {} \
         (`tokenvault token list --as acme/olivia --all`).",
        all.len()
    ));

    let e = refused(
        "adam revokes uma's token",
        store.revoke(&adam, &own.info.id, None),
        "forbidden",
    )?;
    s.say(format!("adam may not revoke uma's token either: {e}."));

    let grant = store.exchange(for_uma.token.expose())?;
    s.say(format!(
        "uma's client exchanged her ci token for a {} access token {}, valid {} s \
         (`tokenvault exchange -` reads the token from standard input).",
        grant.token_type,
        short(grant.access_token.expose()),
        grant.expires_at - grant.issued_at
    ));

    let who = store.verify(grant.access_token.expose())?;
    s.say(format!(
        "The API verified it: {}/{} ({}), scopes {} (`tokenvault verify -`).",
        who.org,
        who.user,
        who.role,
        who.scopes.to_vec().join(",")
    ));

    let e = refused(
        "a user token asks for user-write",
        store.authorize(grant.access_token.expose(), "user-write"),
        "insufficient_scope",
    )?;
    s.say(format!(
        "Role restricted: a User's token is refused the Admin scope: {e}."
    ));

    store.revoke(&olivia, &for_uma.info.id, Some("rotated"))?;
    let e = refused(
        "verify after revoke",
        store.verify(grant.access_token.expose()),
        "revoked",
    )?;
    refused(
        "exchange after revoke",
        store.exchange(for_uma.token.expose()),
        "revoked",
    )?;
    s.say(format!(
        "olivia revoked uma's ci token (`tokenvault token revoke --as acme/olivia ID`): \
         the access token derived from it is rejected ({e}), and so is a new exchange."
    ));

    let adam_grant = store.exchange(for_adam.token.expose())?;
    store.authorize(adam_grant.access_token.expose(), "user-write")?;
    store.set_role("acme", "adam", Role::User)?;
    refused(
        "demoted admin asks for user-write",
        store.authorize(adam_grant.access_token.expose(), "user-write"),
        "insufficient_scope",
    )?;
    s.say(
        "adam's access token held `user-write`; once he was demoted to user \
         (`tokenvault member role acme adam user`) the same token lost it at once."
            .into(),
    );

    let events = store.audit(&olivia, 5)?;
    let mut text = String::from(
        "The audit trail, newest first, refused calls included (`tokenvault audit --as acme/olivia`):",
    );
    for e in &events {
        text.push_str(&format!(
            "\n      #{:<3} {:<7} {:<16} {}",
            e.seq, e.actor, e.action, e.outcome
        ));
    }
    s.say(text);

    let r = store.check_integrity()?;
    if !r.is_clean() {
        let mut e = CliError::new("corrupt", "demo: the integrity check found problems");
        e.details = r.problems;
        return Err(e);
    }
    s.say(format!(
        "Integrity check: {} members, {} refresh and {} access records, no problems (`tokenvault check`).",
        r.members, r.refresh_tokens, r.access_tokens
    ));
    Ok(())
}
