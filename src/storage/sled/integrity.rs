//! The sled backend's integrity check: every tree walked, each record
//! decoded and checked against its key and the records it refers to.

use super::scan::{org_from_key, u64_from};
use super::{io, slot_of, SledBackend};
use crate::codec::{decode, decode_access, decode_event, decode_refresh, member_key, MemberRecord};
use crate::error::Result;
use crate::storage::IntegrityReport;

pub(super) fn check(b: &SledBackend) -> Result<IntegrityReport> {
    let mut r = IntegrityReport::default();
    let p = &mut r.problems;
    for kv in b.members.iter() {
        let (k, v) = kv.map_err(io)?;
        r.members += 1;
        match decode::<MemberRecord>(&v, "member") {
            Ok(m) if member_key(&m.org, &m.user) == k.as_ref() => {}
            Ok(m) => p.push(format!(
                "member {}/{} stored under a foreign key",
                m.org, m.user
            )),
            Err(e) => p.push(format!("members: {e}")),
        }
    }
    for kv in b.cutoffs.iter() {
        let (k, v) = kv.map_err(io)?;
        if org_from_key(&k).is_none() || u64_from(&v).is_none() {
            p.push("cutoffs: undecodable entry".into());
        }
    }
    for kv in b.org_policy.iter() {
        let (k, v) = kv.map_err(io)?;
        if org_from_key(&k).is_none()
            || decode::<crate::codec::OrgPolicyRecord>(&v, "org policy").is_err()
        {
            p.push("org_policy: undecodable entry".into());
        }
    }
    let mut refresh_ids = std::collections::HashSet::new();
    let mut issue_seqs = std::collections::HashSet::new();
    for kv in b.refresh.iter() {
        let (k, v) = kv.map_err(io)?;
        r.refresh_tokens += 1;
        match decode_refresh(&v) {
            Ok(rec) => {
                if rec.id[..] != k[..] {
                    p.push(format!(
                        "refresh record {} stored under a foreign key",
                        crate::TokenId(rec.id)
                    ));
                }
                if let Some(issue) = rec.issue {
                    if !issue_seqs.insert(issue.seq) {
                        p.push(format!("audit event {} stored twice", issue.seq));
                    }
                }
                refresh_ids.insert(rec.id);
            }
            Err(e) => p.push(format!("refresh: {e}")),
        }
    }
    let mut access_ids = std::collections::HashSet::new();
    for kv in b.access.iter() {
        let (k, v) = kv.map_err(io)?;
        r.access_tokens += 1;
        match decode_access(&v) {
            Ok(a) => {
                if slot_of(&k).is_none() || k[..16] != a.refresh_id {
                    p.push(format!(
                        "access record {} stored under a foreign key",
                        crate::TokenId(a.id)
                    ));
                }
                if !access_ids.insert(a.id) {
                    p.push(format!(
                        "access record {} stored twice",
                        crate::TokenId(a.id)
                    ));
                }
                if !refresh_ids.contains(&a.refresh_id) {
                    p.push(format!(
                        "access record {} without its refresh record {}",
                        crate::TokenId(a.id),
                        crate::TokenId(a.refresh_id)
                    ));
                }
            }
            Err(e) => p.push(format!("access: {e}")),
        }
    }
    for kv in b.last_refresh.iter() {
        let (k, v) = kv.map_err(io)?;
        let ok = <[u8; 16]>::try_from(&k[..]).is_ok_and(|id| refresh_ids.contains(&id));
        if !ok || crate::codec::decode_last_use(&v).is_none() {
            p.push("last_refresh entry without its refresh record".into());
        }
    }
    for kv in b.events.iter() {
        let (_, v) = kv.map_err(io)?;
        r.events += 1;
        match decode_event(&v) {
            Ok(e) if issue_seqs.contains(&e.seq) => {
                p.push(format!("audit event {} stored twice", e.seq));
            }
            Ok(_) => {}
            Err(e) => p.push(format!("events: {e}")),
        }
    }
    r.events += issue_seqs.len() as u64;
    Ok(r)
}
