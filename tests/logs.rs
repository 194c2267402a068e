//! `tokenvault serve --log-format json`: one JSON object a line with time,
//! level, target, and for a request its route template, status, latency and
//! peer; and, in either format, no token or secret anywhere in the log after
//! a flow that handles many (exchange, bearer calls, a token created over
//! HTTP with its secret in the answer, a revocation, garbage tokens).
#![cfg(feature = "cli")]

#[path = "support/serve.rs"]
mod serve;

use std::net::SocketAddr;

use reqwest::blocking::Client;
use serde_json::Value;
use serve::{cli, run_json, seeded_store, tv, Served};

/// Runs the token flow against `api`; every token and secret text it saw.
fn flow(api: SocketAddr, owner_refresh: &str, uma_refresh: &str) -> Vec<String> {
    let client = Client::new();
    let mut seen = vec![owner_refresh.to_string(), uma_refresh.to_string()];
    let exchange = |refresh: &str| -> String {
        let r = client
            .get(format!("http://{api}/oauth/access-token"))
            .header("X-Refresh-Token", refresh)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        v["data"]["access_token"].as_str().unwrap().to_string()
    };
    let owner = exchange(owner_refresh);
    let uma = exchange(uma_refresh);
    seen.extend([owner.clone(), uma.clone()]);
    // The Owner assigns uma a token over HTTP: its secret is in the answer.
    let created = client
        .post(format!("http://{api}/v3/refresh-token"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"user_id": "uma", "label": "ci"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    let new_secret = created["data"]["token"].as_str().unwrap().to_string();
    let new_id = created["data"]["id"].as_str().unwrap().to_string();
    seen.push(new_secret);
    let listed = client
        .get(format!("http://{api}/v3/refresh-token"))
        .bearer_auth(&uma)
        .send()
        .unwrap();
    assert_eq!(listed.status(), 200);
    let revoked = client
        .delete(format!("http://{api}/v3/refresh-token/{new_id}"))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);
    // Tokens that fail: a typo of a real one, and made-up text.
    let mut typo = uma.clone().into_bytes();
    let i = typo.len() - 8;
    typo[i] = if typo[i] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [
        typo.as_str(),
        "tva_madeUpButLongEnoughToLookLikeATokenText0000",
    ] {
        let r = client
            .get(format!("http://{api}/v3/refresh-token"))
            .bearer_auth(bad)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
        seen.push(bad.to_string());
    }
    seen
}

/// No token, nor the body of one (its text without the `tvr_`/`tva_`
/// prefix), nor a long piece of its body, is in `log`.
fn assert_no_secret(log: &str, seen: &[String]) {
    for t in seen {
        let body = t.split_once('_').map_or(t.as_str(), |(_, b)| b);
        assert!(!log.contains(t.as_str()), "the log shows a token: {t}");
        assert!(!log.contains(body), "the log shows a token's body: {t}");
        for piece in body.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!log.contains(piece), "the log shows part of {t}: {piece}");
        }
    }
}

fn tokens(db: &std::path::Path) -> (String, String) {
    let owner = cli(db, &["token", "generate", "--as", "acme/olivia"]);
    let uma = cli(db, &["token", "generate", "--as", "acme/uma"]);
    (
        owner["token"].as_str().unwrap().to_string(),
        uma["token"].as_str().unwrap().to_string(),
    )
}

#[test]
fn json_lines_carry_the_request_fields_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let (owner, uma) = tokens(&db);
    let mut s = Served::start(&db, &["--log-format", "json"]);
    let api = s.addr_of("listening");
    let seen = flow(api, &owner, &uma);
    // The last request's line, then a clean stop.
    s.wait_for("\"status\":401");
    assert!(s.stop().success());
    let log = s.log_text();
    let mut requests = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let o = v.as_object().expect("an object");
        let time = o["time"].as_str().expect("time");
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&o["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(o["target"].as_str().unwrap().starts_with("tokenvault"));
        if o.get("message").and_then(Value::as_str) == Some("request") {
            requests.push(v.clone());
        }
    }
    // exchange ×2, POST, GET, DELETE, two refused GETs.
    assert_eq!(requests.len(), 7, "{log}");
    for r in &requests {
        let route = r["route"].as_str().unwrap();
        assert!(
            [
                "/oauth/access-token",
                "/v3/refresh-token",
                "/v3/refresh-token/{id}"
            ]
            .contains(&route),
            "{r}"
        );
        assert!(r["status"].as_u64().unwrap() >= 200);
        assert!(r["latency"].as_f64().unwrap() >= 0.0, "{r}");
        let peer: SocketAddr = r["peer"].as_str().unwrap().parse().expect("peer");
        assert!(peer.ip().is_loopback());
        assert!(r["method"].is_string());
    }
    let statuses: Vec<u64> = requests
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 201, 200, 204, 401, 401]);
    assert_no_secret(&log, &seen);
}

#[test]
fn text_lines_show_no_secret_either() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let (owner, uma) = tokens(&db);
    let mut s = Served::start(&db, &[]);
    let api = s.addr_of("listening");
    let seen = flow(api, &owner, &uma);
    let last = s.wait_for("status=401");
    assert!(last.contains("route=/v3/refresh-token"), "{last}");
    assert!(last.contains("peer=127.0.0.1:"), "{last}");
    assert!(last.contains("latency="), "{last}");
    assert!(s.stop().success());
    assert_no_secret(&s.log_text(), &seen);
}

#[test]
fn an_unknown_log_format_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let (code, v) = run_json(tv(&db).args(["--json", "serve", "--log-format", "xml"]));
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["error"]["kind"], "usage");
}
