//! The OpenAPI document (`docs/openapi.json`) against the routers: it is
//! what `GET /openapi.json` serves when enabled (and nothing is served when
//! not), it parses as OpenAPI 3.1, and its routes are exactly the routes
//! registered in `src/http/mod.rs`, each of which the server answers (not
//! 404 "no such route", not 405), while every undocumented method on a
//! documented path gets 405.
#![cfg(feature = "http")]

mod common;

use std::collections::BTreeSet;

use common::http::{client, Server};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokenvault::http::HttpConfig;
use tokenvault::TokenStore;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn committed() -> (String, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    let v = serde_json::from_str(&text).expect("docs/openapi.json is JSON");
    (text, v)
}

/// (METHOD, path template) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, _) in item.as_object().expect("path item") {
            if METHODS.contains(&m.as_str()) {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// (METHOD, path template) of every `.route(…)` call of `fn routes` in
/// `src/http/mod.rs`, read from the source (`HEAD` refusals aside).
fn registered() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs");
    let src = std::fs::read_to_string(path).expect("src/http/mod.rs");
    let mut out = BTreeSet::new();
    // The body of `fn routes`, where the routers' routes are registered.
    let body = src
        .split("\nfn routes(")
        .nth(1)
        .expect("fn routes in src/http/mod.rs");
    let body = body.split("\n}\n").next().unwrap();
    let mut calls = body.split(".route(").skip(1).peekable();
    assert!(
        calls.peek().is_some(),
        "no .route( calls found in src/http/mod.rs"
    );
    for call in calls {
        // The call's text: up to the next builder call on a new line.
        let call = call.split("\n        .").next().unwrap_or(call);
        let call = call.split(";\n").next().unwrap_or(call);
        let start = call.find('"').expect("a path literal") + 1;
        let end = start + call[start..].find('"').expect("closing quote");
        let path = &call[start..end];
        let rest = &call[end..];
        let mut found = false;
        for m in METHODS {
            for pat in [format!("({m}("), format!(" {m}("), format!(".{m}(")] {
                if rest.contains(&pat) {
                    out.insert((m.to_uppercase(), path.to_string()));
                    found = true;
                }
            }
        }
        assert!(found, "no method found for route {path}");
    }
    out
}

#[test]
fn the_document_parses_as_openapi_3_1() {
    let (_, doc) = committed();
    assert!(
        doc["openapi"].as_str().expect("openapi").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let ops: Vec<_> = item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(m, _)| METHODS.contains(&m.as_str()))
            .collect();
        assert!(!ops.is_empty(), "{path} has no operation");
        for (m, op) in ops {
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{m} {path} has no responses");
            for (code, r) in responses {
                assert!(
                    code.len() == 3 && code.parse::<u16>().is_ok(),
                    "{m} {path} {code}"
                );
                assert!(r.is_object(), "{m} {path} {code}");
            }
            // Every path parameter is declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(item["parameters"].as_array().into_iter().flatten())
                    .any(|p| p["in"] == "path" && p["name"] == name);
                assert!(declared, "{m} {path}: parameter {name} undeclared");
            }
        }
    }
    // Every $ref points at something in the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn the_document_lists_exactly_the_registered_routes() {
    let (_, doc) = committed();
    let documented = documented(&doc);
    let registered = registered();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes the router lacks: {extra:?}"
    );
}

#[test]
fn the_server_answers_every_documented_route_and_only_those_methods() {
    let (text, doc) = committed();
    let store = TokenStore::temporary().unwrap();
    let server = Server::start(&store, HttpConfig::default().openapi(true));
    let c = client();

    // Served as committed.
    let res = c.get(server.url("/openapi.json")).send().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(res.text().unwrap(), text);

    let documented = documented(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let concrete = path.replace("{id}", "0123456789abcdef0123456789abcdef");
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let res = c
                .request(method.clone(), server.url(&concrete))
                .send()
                .unwrap();
            let status = res.status();
            let body = res.text().unwrap();
            if documented.contains(&(m.to_uppercase(), path.clone())) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(!body.contains("no such route"), "{method} {path}: {body}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is undocumented"
                );
            }
        }
    }
}

#[test]
fn the_document_is_off_by_default() {
    let store = TokenStore::temporary().unwrap();
    let server = Server::start(&store, HttpConfig::default());
    let res = client().get(server.url("/openapi.json")).send().unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
