//! The membership catalog: organizations, their members, and who holds
//! which token.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::entries::{MemberHot, OrgHot, ROLE_REMOVED};

pub(crate) struct OrgEntry {
    pub(crate) hot: Arc<OrgHot>,
    pub(crate) members: HashMap<String, Arc<MemberHot>>,
    /// Members no longer present who still hold (revoked) tokens, by user
    /// id: what those tokens hang on, and where lists find them. Gone with
    /// their last token, or when the user is added again (the new member
    /// takes over their list).
    pub(crate) ghosts: HashMap<String, Arc<MemberHot>>,
    pub(crate) owner: Option<String>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) orgs: HashMap<String, OrgEntry>,
}

impl Catalog {
    pub(crate) fn org_mut(&mut self, org: &str) -> &mut OrgEntry {
        self.orgs
            .entry(org.to_string())
            .or_insert_with(|| OrgEntry {
                hot: Arc::new(OrgHot {
                    id: Arc::from(org),
                    not_before: AtomicU64::new(0),
                }),
                members: HashMap::new(),
                ghosts: HashMap::new(),
                owner: None,
            })
    }

    pub(crate) fn member(&self, org: &str, user: &str) -> Option<&Arc<MemberHot>> {
        self.orgs.get(org)?.members.get(user)
    }

    /// The refresh tokens stored for `org`, or for one member of it (also
    /// those of a removed member, until they are purged), each with its
    /// issue event's sequence number.
    pub(crate) fn held(&self, org: &str, user: Option<&str>) -> Vec<([u8; 16], u64)> {
        let mut holders: Vec<&Arc<MemberHot>> = Vec::new();
        if let Some(entry) = self.orgs.get(org) {
            match user {
                Some(u) => {
                    holders.extend(entry.members.get(u));
                    holders.extend(entry.ghosts.get(u));
                }
                None => {
                    holders.extend(entry.members.values());
                    holders.extend(entry.ghosts.values());
                }
            }
        }
        let mut out = Vec::new();
        // Each list once (a user is a member or a ghost, so they should not
        // repeat; a repeat would list a token twice).
        let mut seen = std::collections::HashSet::new();
        for m in holders {
            if seen.insert(Arc::as_ptr(&m.held) as usize) {
                out.extend(m.held.lock().iter().map(|(id, seq)| (*id, *seq)));
            }
        }
        out
    }

    /// The member a token of `(org, user)` hangs on: the member, or a
    /// removed stand-in.
    pub(crate) fn holder(&mut self, org: &str, user: &str) -> Arc<MemberHot> {
        if let Some(m) = self.member(org, user) {
            return m.clone();
        }
        let entry = self.org_mut(org);
        let org_hot = entry.hot.clone();
        entry
            .ghosts
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(MemberHot::new(org_hot, user, ROLE_REMOVED, 0)))
            .clone()
    }
}
