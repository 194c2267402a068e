//! Roles, scopes and the two policy tables of DESIGN.md: which scopes each
//! role may hold, and which member may perform which management call.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A member's role in an organization: `Owner` ⊇ `Admin` ⊇ `User` ⊇
/// `Stakeholder`. Each organization has exactly one Owner (the Account
/// Owner).
///
/// Serializes as its lowercase name (`owner`, `admin`, `user`,
/// `stakeholder`), as `Display`, `FromStr` and the CLI say; deserializing
/// also takes the capitalized names that releases before 0.2 wrote.
/// (Compact formats such as bincode store the variant's index, unchanged.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Squadcast's view-only role.
    #[serde(alias = "Stakeholder")]
    Stakeholder,
    /// An ordinary member.
    #[serde(alias = "User")]
    User,
    /// An administrator of the organization.
    #[serde(alias = "Admin")]
    Admin,
    /// The Account Owner; exactly one per organization.
    #[serde(alias = "Owner")]
    Owner,
}

impl Role {
    /// All roles, weakest first.
    pub const ALL: [Role; 4] = [Role::Stakeholder, Role::User, Role::Admin, Role::Owner];

    /// The lowercase name: `owner`, `admin`, `user` or `stakeholder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
            Role::Stakeholder => "stakeholder",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(i: u8) -> Option<Role> {
        Role::ALL.get(i as usize).copied()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    /// Parses `owner`, `admin`, `user` or `stakeholder` (any case).
    fn from_str(s: &str) -> Result<Role> {
        match s.to_ascii_lowercase().as_str() {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "stakeholder" => Ok(Role::Stakeholder),
            _ => Err(Error::InvalidArgument(format!(
                "unknown role `{s}` (expected owner, admin, user or stakeholder)"
            ))),
        }
    }
}

/// A set of scopes of one [`Policy`], as a bit set (a policy names at most 64
/// scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct ScopeSet(pub(crate) u64);

impl ScopeSet {
    pub(crate) fn contains(self, bit: u8) -> bool {
        self.0 & (1u64 << bit) != 0
    }
    pub(crate) fn and(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }
}

/// Maps each role to the scopes it may hold.
///
/// A token's scopes are a subset of `policy(role at issue)`; at verification
/// the effective scopes are the token's scopes intersected with
/// `policy(current role)`. [`Policy::default`] is DESIGN.md's table, with
/// scope names from Squadcast's public API:
///
/// | scope | Stakeholder | User | Admin | Owner |
/// |---|---|---|---|---|
/// | `read`, `squad-read` | yes | yes | yes | yes |
/// | `incident-write` | | yes | yes | yes |
/// | `service-write`, `squad-create`, `squad-update`, `user-write` | | | yes | yes |
/// | `org-admin` | | | | yes |
///
/// ```
/// use tokenvault::{Policy, Role};
/// let policy = Policy::builder()
///     .grant(Role::Stakeholder, ["read"])
///     .grant(Role::User, ["read", "write"])
///     .grant(Role::Admin, ["read", "write", "admin"])
///     .grant(Role::Owner, ["read", "write", "admin", "billing"])
///     .build()?;
/// assert!(policy.allows(Role::User, "write"));
/// assert!(!policy.allows(Role::User, "admin"));
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    names: Vec<String>,
    index: HashMap<String, u8>,
    masks: [u64; 4],
}

/// Builds a [`Policy`]; see [`Policy::builder`].
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    grants: Vec<(Role, Vec<String>)>,
}

impl PolicyBuilder {
    /// Lets `role` hold each of `scopes` (in addition to earlier grants).
    pub fn grant<I, S>(mut self, role: Role, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grants
            .push((role, scopes.into_iter().map(Into::into).collect()));
        self
    }

    /// Finishes the policy.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a scope name is empty, longer than 64
    /// bytes, or holds characters other than ASCII letters, digits, `-`,
    /// `_`, `:` and `.`, or if more than 64 distinct scopes are named.
    ///
    /// ```
    /// use tokenvault::{Policy, Role};
    /// assert!(Policy::builder().grant(Role::User, ["bad scope"]).build().is_err());
    /// ```
    pub fn build(self) -> Result<Policy> {
        let mut names = Vec::new();
        let mut index = HashMap::new();
        let mut masks = [0u64; 4];
        for (role, scopes) in self.grants {
            for s in scopes {
                validate_scope(&s)?;
                let bit = match index.get(&s) {
                    Some(&b) => b,
                    None => {
                        if names.len() >= 64 {
                            return Err(Error::InvalidArgument(
                                "a policy may name at most 64 scopes".into(),
                            ));
                        }
                        let b = names.len() as u8;
                        names.push(s.clone());
                        index.insert(s, b);
                        b
                    }
                };
                masks[role.index()] |= 1u64 << bit;
            }
        }
        Ok(Policy {
            names,
            index,
            masks,
        })
    }
}

fn validate_scope(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("invalid scope name `{s}`")))
    }
}

impl Default for Policy {
    fn default() -> Self {
        let base = ["read", "squad-read"];
        let user = ["incident-write"];
        let admin = [
            "service-write",
            "squad-create",
            "squad-update",
            "user-write",
        ];
        Policy::builder()
            .grant(Role::Stakeholder, base)
            .grant(Role::User, base)
            .grant(Role::User, user)
            .grant(Role::Admin, base)
            .grant(Role::Admin, user)
            .grant(Role::Admin, admin)
            .grant(Role::Owner, base)
            .grant(Role::Owner, user)
            .grant(Role::Owner, admin)
            .grant(Role::Owner, ["org-admin"])
            .build()
            .expect("the default policy is valid")
    }
}

impl Policy {
    /// Starts an empty policy.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// Whether `role` may hold `scope`.
    pub fn allows(&self, role: Role, scope: &str) -> bool {
        self.index
            .get(scope)
            .is_some_and(|&b| self.mask(role).contains(b))
    }

    /// The scopes `role` may hold, in the order they were first granted.
    pub fn scopes_of(&self, role: Role) -> Vec<String> {
        self.names(self.mask(role))
    }

    pub(crate) fn mask(&self, role: Role) -> ScopeSet {
        ScopeSet(self.masks[role.index()])
    }

    pub(crate) fn bit(&self, scope: &str) -> Option<u8> {
        self.index.get(scope).copied()
    }

    /// Scope names to a set; names the policy does not know are dropped
    /// (they could never be granted anyway).
    pub(crate) fn set_of<S: AsRef<str>>(&self, scopes: &[S]) -> ScopeSet {
        let mut m = 0u64;
        for s in scopes {
            if let Some(b) = self.bit(s.as_ref()) {
                m |= 1u64 << b;
            }
        }
        ScopeSet(m)
    }

    pub(crate) fn names(&self, set: ScopeSet) -> Vec<String> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| set.contains(*i as u8))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The scope set a new token of `role` gets: all of the role's scopes, or
    /// the narrowed list, which must lie inside the role's.
    pub(crate) fn narrow(&self, role: Role, requested: Option<&[String]>) -> Result<ScopeSet> {
        let allowed = self.mask(role);
        let Some(req) = requested else {
            return Ok(allowed);
        };
        if req.is_empty() {
            return Err(Error::InvalidArgument(
                "a token needs at least one scope".into(),
            ));
        }
        let mut m = 0u64;
        for s in req {
            match self.bit(s) {
                Some(b) if allowed.contains(b) => m |= 1u64 << b,
                Some(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "scope `{s}` is not allowed for the role {role}"
                    )))
                }
                None => return Err(Error::InvalidArgument(format!("unknown scope `{s}`"))),
            }
        }
        Ok(ScopeSet(m))
    }
}

/// The scope names of `policy` (by bit), interned for the life of the
/// process: one copy per distinct list of names, however many stores use
/// it, so that a verified token's [`crate::Scopes`] can name its scopes
/// without holding a reference count. Bounded by the number of distinct
/// policies a process builds.
pub(crate) fn interned_names(policy: &Policy) -> &'static [Box<str>] {
    static TABLE: parking_lot::Mutex<Vec<&'static [Box<str>]>> =
        parking_lot::Mutex::new(Vec::new());
    let mut table = TABLE.lock();
    let same = |l: &[Box<str>]| {
        l.len() == policy.names.len() && l.iter().zip(&policy.names).all(|(a, b)| **a == **b)
    };
    if let Some(found) = table.iter().find(|l| same(l)) {
        return found;
    }
    let list: Box<[Box<str>]> = policy.names.iter().map(|n| n.as_str().into()).collect();
    let list: &'static [Box<str>] = Box::leak(list);
    table.push(list);
    list
}

/// The management calls of DESIGN.md's policy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    AssignOther,
    ListOrg,
    RevokeOther,
    BulkRevokeOther,
    BulkRevokeOrg,
    Audit,
}

/// DESIGN.md's management table: may a member of role `actor` do `action`
/// to another member or the whole org? Acting on oneself (generate, list
/// own, revoke own) is open to every role.
pub(crate) fn may(actor: Role, action: Action) -> bool {
    match action {
        Action::AssignOther
        | Action::ListOrg
        | Action::RevokeOther
        | Action::BulkRevokeOther
        | Action::BulkRevokeOrg
        | Action::Audit => actor == Role::Owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_design_table() {
        let p = Policy::default();
        for r in Role::ALL {
            assert!(p.allows(r, "read"));
            assert!(p.allows(r, "squad-read"));
        }
        assert!(!p.allows(Role::Stakeholder, "incident-write"));
        assert!(p.allows(Role::User, "incident-write"));
        assert!(!p.allows(Role::User, "user-write"));
        assert!(p.allows(Role::Admin, "user-write"));
        assert!(!p.allows(Role::Admin, "org-admin"));
        assert!(p.allows(Role::Owner, "org-admin"));
        assert!(!p.allows(Role::Owner, "nope"));
    }

    #[test]
    fn narrowing_rejects_scopes_outside_the_role() {
        let p = Policy::default();
        let req = vec!["user-write".to_string()];
        assert!(p.narrow(Role::User, Some(&req)).is_err());
        assert_eq!(
            p.narrow(Role::Admin, Some(&req)).unwrap(),
            p.set_of(&["user-write"])
        );
        assert!(p.narrow(Role::Admin, Some(&[])).is_err());
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
