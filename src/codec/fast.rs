//! The fast decoders: an access or refresh record read straight from its
//! bytes (no serde), and a view of a refresh record that borrows them.

use super::*;

/// A cursor over bincode 2 standard-configuration bytes.
pub(super) struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }
    /// bincode's variable-length unsigned integer, at most `max_tag`
    /// wide (251: u16, 252: u32, 253: u64 follow, little-endian).
    fn varint(&mut self, max_tag: u8) -> Option<u64> {
        let tag = self.byte()?;
        let v = match tag {
            0..=250 => u64::from(tag),
            251 => u64::from(u16::from_le_bytes(self.array()?)),
            252 => u64::from(u32::from_le_bytes(self.array()?)),
            253 => u64::from_le_bytes(self.array()?),
            _ => return None,
        };
        (tag <= max_tag).then_some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        self.varint(253)
    }
    /// An enum variant index (a u32).
    fn variant(&mut self) -> Option<u32> {
        self.varint(252).map(|v| v as u32)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u64()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn role(&mut self) -> Option<Role> {
        Role::ALL.get(self.variant()? as usize).copied()
    }
}

pub(super) fn fast_access(bytes: &[u8]) -> Option<AccessRecord> {
    let (&FORMAT_VERSION, body) = bytes.split_first()? else {
        return None;
    };
    let mut c = Cursor(body);
    let rec = AccessRecord {
        id: c.array()?,
        refresh_id: c.array()?,
        issued_at: c.u64()?,
        expires_at: c.u64()?,
        revoked: c.flag()?,
        verifier: c.array()?,
        scopes: None,
    };
    c.0.is_empty().then_some(rec)
}

/// Refresh records up to this size take the fast path: bincode's 64 KiB
/// allocation limit cannot be reached within them.
pub(super) const FAST_REFRESH_MAX: usize = 2048;

/// A refresh record's body read in place: its strings borrowed from the
/// bytes (checked as UTF-8 all the same).
pub(super) struct RefreshParts<'a> {
    id: [u8; 16],
    org: &'a str,
    user: &'a str,
    role_at_issue: Role,
    scopes: Vec<&'a str>,
    label: Option<&'a str>,
    created_at: u64,
    created_by: &'a str,
    expires_at: Option<u64>,
    /// `None` while active; else when, by whom, why.
    revoked: Option<(u64, &'a str, Option<&'a str>)>,
    verifier: [u8; 32],
}

pub(super) fn refresh_parts(body: &[u8]) -> Option<RefreshParts<'_>> {
    if body.len() >= FAST_REFRESH_MAX {
        return None;
    }
    let mut c = Cursor(body);
    let id = c.array()?;
    let org = c.str()?;
    let user = c.str()?;
    let role_at_issue = c.role()?;
    let n = usize::try_from(c.u64()?).ok()?;
    // Each scope takes at least one byte: a longer list cannot fit.
    if n > c.0.len() {
        return None;
    }
    let mut scopes = Vec::with_capacity(n);
    for _ in 0..n {
        scopes.push(c.str()?);
    }
    let label = if c.flag()? { Some(c.str()?) } else { None };
    let created_at = c.u64()?;
    let created_by = c.str()?;
    let expires_at = if c.flag()? { Some(c.u64()?) } else { None };
    let revoked = match c.variant()? {
        0 => None,
        1 => Some((
            c.u64()?,
            c.str()?,
            if c.flag()? { Some(c.str()?) } else { None },
        )),
        _ => return None,
    };
    let verifier = c.array()?;
    c.0.is_empty().then_some(RefreshParts {
        id,
        org,
        user,
        role_at_issue,
        scopes,
        label,
        created_at,
        created_by,
        expires_at,
        revoked,
        verifier,
    })
}

pub(super) fn fast_refresh(body: &[u8]) -> Option<RefreshRecord> {
    let p = refresh_parts(body)?;
    Some(RefreshRecord {
        id: p.id,
        org: p.org.into(),
        user: p.user.into(),
        role_at_issue: p.role_at_issue,
        scopes: p.scopes.iter().map(|s| s.to_string()).collect(),
        label: p.label.map(Into::into),
        created_at: p.created_at,
        created_by: p.created_by.into(),
        expires_at: p.expires_at,
        state: match p.revoked {
            None => StoredState::Active,
            Some((at, by, reason)) => StoredState::Revoked {
                at,
                by: by.into(),
                reason: reason.map(Into::into),
            },
        },
        verifier: p.verifier,
        issue: None,
        life: Lifecycle::default(),
    })
}

/// What memory keeps of a refresh record (opening a store reads one per
/// token), its strings borrowed rather than copied.
#[derive(PartialEq, Eq)]
pub(crate) struct RefreshView<'a> {
    pub id: [u8; 16],
    pub org: &'a str,
    pub user: &'a str,
    pub scopes: Vec<&'a str>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// When it was revoked; `None` while active.
    pub revoked_at: Option<u64>,
    pub verifier: [u8; 32],
    /// The sequence number of the issue event it carries (0: none).
    pub issue_seq: u64,
    /// Its lifecycle state.
    pub life: Lifecycle,
}

impl RefreshRecord {
    /// The record as a [`RefreshView`].
    pub(crate) fn view(&self) -> RefreshView<'_> {
        RefreshView {
            id: self.id,
            org: &self.org,
            user: &self.user,
            scopes: self.scopes.iter().map(String::as_str).collect(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: match self.state {
                StoredState::Active => None,
                StoredState::Revoked { at, .. } => Some(at),
            },
            verifier: self.verifier,
            issue_seq: self.issue.map_or(0, |i| i.seq),
            life: self.life.clone(),
        }
    }
}

/// Reads a stored refresh record in place, without copying its strings,
/// when the fast reader can (it accepts exactly what [`decode_refresh`]
/// would, with the same values); `None` otherwise, and the caller decodes
/// it with [`decode_refresh`].
pub(crate) fn view_refresh(bytes: &[u8]) -> Option<RefreshView<'_>> {
    let (body, issue, life) = split_refresh(bytes).ok()?;
    let p = refresh_parts(body?)?;
    Some(RefreshView {
        id: p.id,
        org: p.org,
        user: p.user,
        scopes: p.scopes,
        created_at: p.created_at,
        expires_at: p.expires_at,
        revoked_at: p.revoked.map(|(at, _, _)| at),
        verifier: p.verifier,
        issue_seq: issue.map_or(0, |i| i.seq),
        life,
    })
}
