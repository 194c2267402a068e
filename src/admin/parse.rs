//! Parsers for argument values (actors, roles, durations, points in time)
//! and the one time formatter used by the human output.
//!
//! The parsers return `Err(String)` so that clap reports a bad value as a
//! usage error (exit 2, kind `usage`).

#![allow(missing_docs)]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Actor, Role};

/// `ORG/USER`: the organization id may not contain `/`, so the first `/`
/// splits; the user id may contain further slashes.
pub fn actor(s: &str) -> Result<Actor, String> {
    match s.split_once('/') {
        Some((org, user)) if !org.is_empty() && !user.is_empty() => Ok(Actor::new(org, user)),
        _ => Err(format!("`{s}` is not ORG/USER (e.g. acme/olivia)")),
    }
}

/// Whether `s` has the shape of a token (`<prefix><r|a>_` and at least 40
/// base62 digits), whatever the prefix: such text holds a secret and is
/// never repeated in an error.
pub fn looks_like_token(s: &str) -> bool {
    let Some((head, body)) = s.trim().rsplit_once('_') else {
        return false;
    };
    let kind_letter = matches!(head.as_bytes().last(), Some(b'r' | b'a'));
    kind_letter
        && head.len() <= 64
        && head.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && body.len() >= 40
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The pieces of `s` that look like tokens (see [`looks_like_token`]),
/// e.g. in `--to=tvr_…` or `acme/tvr_…`.
pub fn tokens_in(s: &str) -> Vec<&str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|p| looks_like_token(p))
        .collect()
}

/// `text` with every piece that looks like a token replaced by `<token>`.
pub fn redact_tokens(text: &str, args: &[String]) -> String {
    let mut out = text.to_string();
    for a in args {
        for t in tokens_in(a) {
            out = out.replace(t, "<token>");
        }
    }
    for t in tokens_in(&out.clone()) {
        out = out.replace(t, "<token>");
    }
    out
}

/// `owner`, `admin`, `user` or `stakeholder`, in any case.
pub fn role(s: &str) -> Result<Role, String> {
    s.parse::<Role>()
        .map_err(|_| format!("unknown role `{s}` (expected owner, admin, user or stakeholder)"))
}

/// A positive duration in seconds: plain seconds (`3600`) or numbers with
/// units `w`, `d`, `h`, `m`, `s`, which may be combined (`1h30m`).
pub fn duration(s: &str) -> Result<u64, String> {
    positive(seconds(s)?, s)
}

/// Plain seconds or numbers with units, as [`duration`], zero included.
fn seconds(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration (examples: 3600, 3600s, 90m, 12h, 30d, 1h30m)");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| format!("the duration `{s}` is too long"))?;
    }
    if !digits.is_empty() {
        // Trailing digits without a unit, as in `1h30`.
        return Err(bad());
    }
    Ok(total)
}

/// A limit of an organization's policy: seconds, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

/// A duration as [`duration`] reads it, or `none`.
pub fn limit(s: &str) -> Result<Limit, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    duration(s).map(|d| Limit(Some(d)))
}

/// A duration as [`duration`] reads it, or zero (`0`, `0s`): a
/// rotation's grace period.
pub fn grace(s: &str) -> Result<u64, String> {
    seconds(s)
}

fn positive(n: u64, s: &str) -> Result<u64, String> {
    if n == 0 {
        Err(format!("the duration `{s}` must be positive"))
    } else {
        Ok(n)
    }
}

/// The current time in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A point in time: `now`, Unix seconds, or RFC 3339 (`2026-03-01T12:00:00Z`,
/// with an optional fraction and a `Z` or `±HH:MM` offset; a bare date means
/// midnight UTC).
pub fn time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("`{s}` is too large for Unix seconds"));
    }
    rfc3339(s).ok_or_else(|| {
        format!("`{s}` is not a time (use `now`, Unix seconds, or RFC 3339 such as 2026-03-01T12:00:00Z)")
    })
}

/// Parses RFC 3339 into Unix seconds; `None` if malformed or before 1970.
pub fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return u64::try_from(days * 86_400).ok();
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (hour, minute, mut second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // A leap second counts as the last second of its minute.
    second = second.min(59);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3_600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let t = days * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    u64::try_from(t).ok()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let rem = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("3600"), Ok(3600));
        assert_eq!(duration("3600s"), Ok(3600));
        assert_eq!(duration("90m"), Ok(5400));
        assert_eq!(duration("12h"), Ok(43_200));
        assert_eq!(duration("30d"), Ok(2_592_000));
        assert_eq!(duration("2w"), Ok(1_209_600));
        assert_eq!(duration("1h30m"), Ok(5400));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "1x",
            "1h30",
            "-5",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(limit("none"), Ok(Limit(None)));
        assert_eq!(limit("30d"), Ok(Limit(Some(2_592_000))));
        assert!(limit("0").is_err() && limit("never").is_err());
        // A grace period may be zero; otherwise it reads as a duration.
        assert_eq!(grace("0"), Ok(0));
        assert_eq!(grace("0s"), Ok(0));
        assert_eq!(grace("1h30m"), Ok(5400));
        for bad in ["", "h", "1x", "1h30", "-5", "1.5h"] {
            assert!(grace(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tokens_are_recognized_and_redacted() {
        let t = format!("tvr_{}", "a1B2".repeat(18));
        assert!(looks_like_token(&t));
        assert!(looks_like_token(&format!("acme_corpa_{}", "Z9".repeat(36))));
        assert!(!looks_like_token("0123456789abcdef0123456789abcdef"));
        assert!(!looks_like_token("tvr_short"));
        assert!(!looks_like_token("acme/olivia"));
        assert_eq!(tokens_in(&format!("--to={t}")), vec![t.as_str()]);
        assert_eq!(tokens_in(&format!("acme/{t}")), vec![t.as_str()]);
        let msg = format!("invalid value '{t}' for '<ID>'");
        let red = redact_tokens(&msg, &[]);
        assert_eq!(red, "invalid value '<token>' for '<ID>'");
        assert!(!red.contains(&t[4..20]));
        // Known from the arguments, a token is redacted wherever it shows.
        let msg = format!("{t} is not a member of acme");
        assert_eq!(
            redact_tokens(&msg, &[format!("--to={t}")]),
            "<token> is not a member of acme"
        );
    }

    #[test]
    fn actors() {
        let a = actor("acme/olivia").unwrap();
        assert_eq!((a.org.as_str(), a.user.as_str()), ("acme", "olivia"));
        let a = actor("acme/team/bot").unwrap();
        assert_eq!(a.user, "team/bot");
        for bad in ["acme", "/olivia", "acme/", ""] {
            assert!(actor(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn roles() {
        assert_eq!(role("Admin"), Ok(Role::Admin));
        assert!(role("boss").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(time("0"), Ok(0));
        assert_eq!(time("1700000000"), Ok(1_700_000_000));
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(rfc3339("2023-11-14T22:13:20.123Z"), Some(1_700_000_000));
        assert_eq!(rfc3339("2023-11-15T00:13:20+02:00"), Some(1_700_000_000));
        assert_eq!(rfc3339("2023-11-14T20:13:20-02:00"), Some(1_700_000_000));
        assert_eq!(rfc3339("2024-02-29"), Some(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20.Z",
            "yesterday",
        ] {
            assert!(rfc3339(bad).is_none(), "{bad:?} should be refused");
        }
        let t = now();
        assert!(time("now").unwrap() >= t);
    }

    #[test]
    fn format_round_trips() {
        for t in [0, 59, 86_399, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(rfc3339(&format_time(t)), Some(t), "{t}");
        }
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
