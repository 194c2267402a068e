//! `tokenvault serve --metrics-listen`: the scrape of a running server is
//! parsed by a real Prometheus text parser (Python's `prometheus_client`,
//! which `.ci/run` installs), its counters move with the calls made over
//! HTTP, and no label value holds a token, an id or a raw path.
#![cfg(feature = "cli")]

#[path = "support/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use reqwest::blocking::Client;
use serde_json::Value;
use serve::{cli, run_json, seeded_store, tv, Served};

/// One sample: name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

const PARSER: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        v = s.value
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": v if math.isfinite(v) else None})
print(json.dumps(out))
"#;

/// The scrape parsed by `prometheus_client`; panics if it does not parse.
fn parse(text: &str) -> Vec<Sample> {
    let mut py = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with prometheus_client: .ci/run installs it)");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

fn scrape(client: &Client, metrics: SocketAddr) -> (String, Vec<Sample>) {
    let res = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = res.text().unwrap();
    let samples = parse(&text);
    (text, samples)
}

/// The value of `name` with exactly these labels (0 when absent: a counter
/// not yet moved is not shown).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

#[test]
fn a_scrape_parses_and_its_counters_follow_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let uma = cli(&db, &["token", "generate", "--as", "acme/uma"]);
    let refresh = uma["token"].as_str().unwrap().to_string();
    let refresh_id = uma["id"].as_str().unwrap().to_string();
    let owner = cli(&db, &["token", "generate", "--as", "acme/olivia"]);
    let owner_refresh = owner["token"].as_str().unwrap().to_string();

    let mut s = Served::start(&db, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = s.addr_of("metrics at GET /metrics");
    let api = s.addr_of("listening");
    assert_ne!(metrics, api);
    let client = Client::new();
    let (_, before) = scrape(&client, metrics);

    // Three good exchanges, one garbled, one unknown token.
    let mut access = String::new();
    for _ in 0..3 {
        let r = client
            .get(format!("http://{api}/oauth/access-token"))
            .header("X-Refresh-Token", &refresh)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        access = v["data"]["access_token"].as_str().unwrap().to_string();
    }
    let garbled = client
        .get(format!("http://{api}/oauth/access-token"))
        .header("X-Refresh-Token", "tvr_not-a-token")
        .send()
        .unwrap();
    assert_eq!(garbled.status(), 401);
    // Two verifications through the bearer check: one good, one unknown.
    let listed = client
        .get(format!("http://{api}/v3/refresh-token"))
        .bearer_auth(&access)
        .send()
        .unwrap();
    assert_eq!(listed.status(), 200);
    let mut wrong = access.clone().into_bytes();
    let last = wrong.len() - 10;
    wrong[last] = if wrong[last] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let refused = client
        .get(format!("http://{api}/v3/refresh-token"))
        .bearer_auth(&wrong)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    // The Owner revokes uma's token over HTTP: a management call, durable.
    let owner_access: Value = client
        .get(format!("http://{api}/oauth/access-token"))
        .header("X-Refresh-Token", &owner_refresh)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let owner_access = owner_access["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let deleted = client
        .delete(format!("http://{api}/v3/refresh-token/{refresh_id}"))
        .bearer_auth(&owner_access)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let (text, after) = scrape(&client, metrics);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        moved("tokenvault_exchanges_total", &[("outcome", "ok")]),
        4.0,
        "{text}"
    );
    assert!(
        moved("tokenvault_exchanges_total", &[("outcome", "malformed")])
            + moved(
                "tokenvault_exchanges_total",
                &[("outcome", "invalid_token")]
            )
            >= 1.0,
        "{text}"
    );
    assert!(
        moved("tokenvault_verifications_total", &[("outcome", "ok")]) >= 2.0,
        "{text}"
    );
    assert!(
        moved(
            "tokenvault_verifications_total",
            &[("outcome", "invalid_token")]
        ) + moved(
            "tokenvault_verifications_total",
            &[("outcome", "malformed")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "tokenvault_management_calls_total",
            &[("call", "revoke"), ("outcome", "ok")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "tokenvault_http_requests_total",
            &[("route", "/oauth/access-token"), ("status", "200")]
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        moved(
            "tokenvault_http_requests_total",
            &[("route", "/v3/refresh-token/{id}"), ("status", "204")]
        ),
        1.0,
        "{text}"
    );
    // The revocation waited for a sync: the durable histograms moved.
    assert!(
        moved("tokenvault_durable_wait_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(moved("tokenvault_sync_seconds_count", &[]) >= 1.0, "{text}");
    assert!(
        moved("tokenvault_group_commit_batch_size_count", &[]) >= 1.0,
        "{text}"
    );
    // Live tokens by state, as the store counts them: olivia's active,
    // uma's revoked.
    assert_eq!(
        value(&after, "tokenvault_tokens", &[("state", "active")]),
        1.0
    );
    assert_eq!(
        value(&after, "tokenvault_tokens", &[("state", "revoked")]),
        1.0
    );
    // The scrape's own connection is open while it is served.
    assert!(after
        .iter()
        .any(|s| s.name == "tokenvault_http_connections_open"));

    // No label value holds a token, an id, or anything a client sent.
    let secrets = [
        refresh.as_str(),
        owner_refresh.as_str(),
        access.as_str(),
        wrong.as_str(),
        refresh_id.as_str(),
        "not-a-token",
    ];
    for sample in &after {
        for (k, v) in &sample.labels {
            for secret in secrets {
                assert!(!v.contains(secret), "{} {k}={v}", sample.name);
            }
            if k == "route" {
                assert!(
                    v == "-" || v.starts_with('/') && !v.contains(&refresh_id),
                    "{k}={v}"
                );
            }
        }
    }
    for secret in secrets {
        assert!(!text.contains(secret), "the scrape shows {secret:?}");
    }
    assert!(s.stop().success());
}

#[test]
fn an_unknown_route_counts_under_one_label() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let mut s = Served::start(&db, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = s.addr_of("metrics at GET /metrics");
    let api = s.addr_of("listening");
    let client = Client::new();
    for i in 0..5 {
        let r = client
            .get(format!("http://{api}/no/such/path-{i}?q=secret{i}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let (text, samples) = scrape(&client, metrics);
    assert_eq!(
        value(
            &samples,
            "tokenvault_http_requests_total",
            &[("route", "-"), ("status", "404")]
        ),
        5.0,
        "{text}"
    );
    assert!(!text.contains("path-"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn a_metrics_address_in_use_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, v) = run_json(tv(&db).args([
        "--json",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]));
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "io");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&addr),
        "{v}"
    );
}
