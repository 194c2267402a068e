//! `tokenvault serve --tls-cert PEM --tls-key PEM`: certificates made by
//! rcgen, a rustls client that trusts only their test CAs. The Squadcast
//! SDK flow (exchange, then a call with the access token) over TLS; SIGHUP
//! swaps the certificate for new connections while an open keep-alive
//! connection goes on with its own; a reload that fails keeps the one in
//! use; a bad, missing or mismatched certificate or key is a clear error at
//! start.
#![cfg(feature = "cli")]

#[path = "support/serve.rs"]
mod serve;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::Value;
use serve::{cli, run_json, seeded_store, tv, Served};
use tokio_rustls::rustls;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

// ----- certificates -----

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for localhost and 127.0.0.1 signed by `ca`: its PEM,
/// its key's PEM, and its DER (to tell which one a connection got).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> Leaf {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Writes `leaf` to cert.pem and key.pem in `dir`.
fn install(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (cert, key)
}

// ----- a rustls client speaking HTTP/1.1 on one connection -----

#[allow(deprecated)]
fn client_config(cas: &[&CertifiedIssuer<'static, KeyPair>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One keep-alive connection.
struct Conn(StreamOwned<ClientConnection, TcpStream>);

impl Conn {
    /// Connects and completes the handshake (an error if the server's
    /// certificate is not trusted).
    fn open(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(serve::PATIENCE))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(cfg.clone(), name).unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Conn(s))
    }

    /// The DER of the certificate the server presented.
    fn server_cert(&self) -> Vec<u8> {
        self.0.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends one request and reads its whole answer: status and body.
    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.0.write_all(req.as_bytes()).unwrap();
        self.0.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut byte).expect("answer");
            assert_eq!(n, 1, "the connection closed mid-answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

/// The SDK flow on `conn`: exchange `refresh`, then list tokens with the
/// access token; both must succeed.
fn sdk_flow(conn: &mut Conn, refresh: &str) {
    let (status, body) = conn.request(
        "GET",
        "/oauth/access-token",
        &[("X-Refresh-Token", refresh)],
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["type"], "Bearer");
    let access = v["data"]["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {access}");
    let (status, body) = conn.request(
        "GET",
        "/v3/refresh-token",
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

fn uma_refresh(db: &Path) -> String {
    let t = cli(db, &["token", "generate", "--as", "acme/uma"]);
    t["token"].as_str().unwrap().to_string()
}

fn start_tls(db: &Path, cert: &Path, key: &Path) -> (Served, SocketAddr) {
    let mut s = Served::start(
        db,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = s.addr_of("listening (TLS)");
    (s, addr)
}

// ----- tests -----

#[test]
fn the_sdk_flow_works_over_tls_and_plain_http_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let refresh = uma_refresh(&db);
    let ca1 = ca("test CA one");
    let a = leaf(&ca1, "server a");
    let (cert, key) = install(dir.path(), &a);
    let (mut s, addr) = start_tls(&db, &cert, &key);

    let mut conn = Conn::open(addr, &client_config(&[&ca1])).expect("handshake");
    assert_eq!(conn.server_cert(), a.der);
    sdk_flow(&mut conn, &refresh);

    // A client that trusts another CA refuses the server.
    let stranger = ca("a CA nobody used");
    assert!(Conn::open(addr, &client_config(&[&stranger])).is_err());

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(serve::PATIENCE)).unwrap();
    plain
        .write_all(b"GET /oauth/access-token HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");

    // The server still serves after both.
    let mut again = Conn::open(addr, &client_config(&[&ca1])).expect("handshake");
    sdk_flow(&mut again, &refresh);
    assert!(s.stop().success());
}

#[test]
fn sighup_serves_the_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let refresh = uma_refresh(&db);
    let (ca1, ca2) = (ca("test CA one"), ca("test CA two"));
    let (a, b) = (leaf(&ca1, "server a"), leaf(&ca2, "server b"));
    let (cert, key) = install(dir.path(), &a);
    let (mut s, addr) = start_tls(&db, &cert, &key);
    let trust_both = client_config(&[&ca1, &ca2]);

    let mut kept = Conn::open(addr, &trust_both).expect("handshake");
    assert_eq!(kept.server_cert(), a.der);
    sdk_flow(&mut kept, &refresh);

    // Renew the files, then SIGHUP.
    install(dir.path(), &b);
    s.signal("HUP");
    s.wait_for("TLS certificate and key reloaded");

    // The open keep-alive connection goes on, with its certificate.
    sdk_flow(&mut kept, &refresh);
    assert_eq!(kept.server_cert(), a.der);
    // A new connection gets the new certificate, and a client that trusts
    // only the old CA cannot connect any more.
    let mut fresh = Conn::open(addr, &trust_both).expect("handshake");
    assert_eq!(fresh.server_cert(), b.der);
    sdk_flow(&mut fresh, &refresh);
    assert!(Conn::open(addr, &client_config(&[&ca1])).is_err());

    // A reload that fails (a key that does not fit) keeps certificate b.
    std::fs::write(&key, leaf(&ca1, "stray").key_pem).unwrap();
    s.signal("HUP");
    let line = s.wait_for("TLS reload failed");
    assert!(line.contains("does not fit"), "{line}");
    let mut after = Conn::open(addr, &trust_both).expect("handshake");
    assert_eq!(after.server_cert(), b.der);
    sdk_flow(&mut after, &refresh);
    sdk_flow(&mut kept, &refresh);
    assert!(s.stop().success());
}

/// `serve --json --tls-cert CERT --tls-key KEY` on `db`: exit code and
/// the one JSON document.
fn start_fails(db: &Path, cert: &Path, key: &Path) -> (Option<i32>, Value) {
    run_json(
        tv(db)
            .args(["--json", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(std::process::Stdio::null()),
    )
}

#[test]
fn a_bad_certificate_or_key_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_store(dir.path());
    let ca1 = ca("test CA one");
    let a = leaf(&ca1, "server a");
    let other = leaf(&ca1, "server b");
    let (cert, key) = install(dir.path(), &a);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let wrong_key = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let missing = dir.path().join("missing.pem");

    for (c, k, words) in [
        (&missing, &key, "cannot read the TLS certificate"),
        (&cert, &missing, "cannot read the TLS key"),
        (&garbage, &key, "holds no PEM certificate"),
        (&cert, &garbage, "holds no PEM private key"),
        // The key is the key of the certificate's own file: swapped.
        (&key, &cert, "holds no PEM"),
        (&cert, &wrong_key, "does not fit the certificate"),
    ] {
        let (code, v) = start_fails(&db, c, k);
        assert_eq!(code, Some(1), "{c:?} {k:?}: {v}");
        assert_eq!(v["error"]["kind"], "io", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{words:?} not in {message:?}");
        // Never the key's contents.
        assert!(!message.contains("PRIVATE KEY"), "{message}");
        assert!(!message.contains(&a.key_pem[40..80]), "{message}");
    }

    // One flag without the other is bad usage.
    let (code, v) = run_json(tv(&db).args(["--json", "serve", "--tls-cert"]).arg(&cert));
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["error"]["kind"], "usage");
    // The store was not left held: a command runs on it at once.
    cli(&db, &["stats"]);
}
