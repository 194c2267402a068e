//! The PostgreSQL backend's integrity check: every table read in one
//! snapshot, each record decoded and checked against its row and the
//! records it refers to, and the change log against the epoch row.

use super::*;

pub(super) fn check_integrity(c: &mut Conn) -> Result<IntegrityReport> {
    let mut r = IntegrityReport::default();
    let mut tx = c.read_only_snapshot()?;
    let p = &mut r.problems;
    for row in tx
        .query("SELECT org, member, role FROM tokenvault_members", &[])
        .map_err(pg)?
    {
        r.members += 1;
        let role: i16 = col(&row, 2)?;
        if u8::try_from(role).ok().and_then(Role::from_index).is_none() {
            let (org, user): (String, String) = (col(&row, 0)?, col(&row, 1)?);
            p.push(format!("member {org}/{user} has an unknown role {role}"));
        }
    }
    let mut refresh_ids = HashSet::new();
    for row in tx
        .query(
            "SELECT id, org, member, revoked, record FROM tokenvault_refresh",
            &[],
        )
        .map_err(pg)?
    {
        r.refresh_tokens += 1;
        let id: &[u8] = col(&row, 0)?;
        match decode_refresh(col::<&[u8]>(&row, 4)?) {
            Ok(rec) => {
                let revoked = !rec.state.revocable();
                if rec.id[..] != *id
                    || rec.org != col::<&str>(&row, 1)?
                    || rec.user != col::<&str>(&row, 2)?
                    || revoked != col::<bool>(&row, 3)?
                {
                    p.push(format!(
                        "refresh record {} disagrees with its columns",
                        crate::TokenId(rec.id)
                    ));
                }
                refresh_ids.insert(rec.id);
            }
            Err(e) => p.push(format!("refresh: {e}")),
        }
    }
    for row in tx
        .query(
            "SELECT id, refresh_id, revoked, record FROM tokenvault_access",
            &[],
        )
        .map_err(pg)?
    {
        r.access_tokens += 1;
        let id: &[u8] = col(&row, 0)?;
        let parent: &[u8] = col(&row, 1)?;
        match decode_access(col::<&[u8]>(&row, 3)?) {
            Ok(a) => {
                if a.id[..] != *id
                    || a.refresh_id[..] != *parent
                    || a.revoked != col::<bool>(&row, 2)?
                {
                    p.push(format!(
                        "access record {} disagrees with its columns",
                        crate::TokenId(a.id)
                    ));
                }
                if !refresh_ids.contains(&a.refresh_id) {
                    p.push(format!(
                        "access record {} without its refresh record",
                        crate::TokenId(a.id)
                    ));
                }
            }
            Err(e) => p.push(format!("access: {e}")),
        }
    }
    for row in tx
        .query("SELECT record FROM tokenvault_events", &[])
        .map_err(pg)?
    {
        r.events += 1;
        if let Err(e) = decode_event(col::<&[u8]>(&row, 0)?) {
            p.push(format!("events: {e}"));
        }
    }
    let row = tx
        .query_one("SELECT seq, floor FROM tokenvault_epoch WHERE id = 1", &[])
        .map_err(pg)?;
    let (seq, floor): (i64, i64) = (col(&row, 0)?, col(&row, 1)?);
    let mut seen: HashMap<i64, ()> = HashMap::new();
    for row in tx
        .query("SELECT seq, body FROM tokenvault_changes", &[])
        .map_err(pg)?
    {
        let s: i64 = col(&row, 0)?;
        if s <= floor || s > seq {
            p.push(format!(
                "change log row {s} outside ({floor}, {seq}] of the epoch row"
            ));
        }
        seen.insert(s, ());
        if let Err(e) = decode::<LogChange>(col::<&[u8]>(&row, 1)?, "change log") {
            p.push(format!("change log row {s}: {e}"));
        }
    }
    let expected = usize::try_from(seq - floor).unwrap_or(0);
    if seen.len() != expected {
        p.push(format!(
            "change log holds {} of the {expected} transactions after the floor",
            seen.len()
        ));
    }
    tx.commit().map_err(pg)?;
    Ok(r)
}
