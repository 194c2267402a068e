//! The `member` commands.

use crate::{Role, TokenStore};
use serde_json::{json, Value};

use crate::admin::cli::MemberCommand;
use crate::admin::error::CliError;
use crate::admin::output::{plural, Report, Table};

pub(super) fn member(store: &TokenStore, cmd: &MemberCommand) -> Result<Report, CliError> {
    match cmd {
        MemberCommand::Add { org, user, role } => {
            store.add_member(org, user, *role)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "role": role }),
                format!("Added {user} to {org} as {role}."),
            ))
        }
        MemberCommand::Role { org, user, role } => {
            store.set_role(org, user, *role)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "role": role }),
                format!("{org}/{user} is now {role}; their tokens carry at most a {role}'s scopes from now on."),
            ))
        }
        MemberCommand::Remove { org, user } => {
            let n = store.remove_member(org, user)?;
            Ok(Report::new(
                json!({ "org": org, "user": user, "revoked": n }),
                format!(
                    "Removed {user} from {org} and revoked {}.",
                    plural(n as u64, "refresh token", "refresh tokens")
                ),
            ))
        }
        MemberCommand::Transfer { org, new_owner } => {
            let previous = owner_of(store, org);
            store.transfer_ownership(org, new_owner)?;
            let human = match &previous {
                Some(p) if p == new_owner => format!("{new_owner} is already the Owner of {org}."),
                Some(p) => format!("{new_owner} is now the Owner of {org}; {p} became an Admin."),
                None => format!("{new_owner} is now the Owner of {org}."),
            };
            Ok(Report::new(
                json!({ "org": org, "owner": new_owner, "previous_owner": previous }),
                human,
            ))
        }
        MemberCommand::List { org } => {
            let members = store.members(org);
            if members.is_empty() {
                return Err(CliError::new(
                    "not_found",
                    format!("no organization {org} (it has no members)"),
                ));
            }
            let mut table = Table::new(["USER", "ROLE"]);
            for (u, r) in &members {
                table.row(vec![u.clone(), r.to_string()]);
            }
            let list: Vec<Value> = members
                .iter()
                .map(|(u, r)| json!({ "user": u, "role": r }))
                .collect();
            Ok(Report::new(
                json!({ "org": org, "members": list }),
                table.render(),
            ))
        }
    }
}

pub(super) fn owner_of(store: &TokenStore, org: &str) -> Option<String> {
    store
        .members(org)
        .into_iter()
        .find(|(_, r)| *r == Role::Owner)
        .map(|(u, _)| u)
}

// ----- tokens -----
