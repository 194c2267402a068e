//! The seed's story, clicked through in headless Chromium over WebDriver.
//!
//! The host app (`examples/host_app.rs`, built here as the `host_app` binary)
//! runs with no store argument in a temporary directory; `chromedriver` (the
//! `CHROMEDRIVER` variable, else from `PATH`) drives Chromium (the
//! `CHROME_BIN` variable, else `/usr/bin/chromium` when present). The Owner
//! assigns a token to the User; the User sees it on their profile, generates
//! another and copies it from the page, exchanges it over HTTP, calls the
//! User route (200) and the Admin route (403), revokes it on the page, and
//! the same access token then gets 401. Then SIGTERM, and the app closes its
//! store.
//!
//! Every page is kept as a PNG under the target directory
//! (`target/tmp/host-app-browser/`), the last one as `failure.png` when a
//! step fails. `.ci/browser.sh` installs Chromium and runs this.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long any one event may take: generous, for a loaded two-core machine.
const BOUND: Duration = Duration::from_secs(120);

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A child process killed when dropped (a failing test leaves none behind).
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything a stream of a child printed, gathered by a thread.
fn gather(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut o = o.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    out
}

struct HostApp {
    proc: Proc,
    base: String,
    stdout: Arc<Mutex<String>>,
    log: Arc<Mutex<String>>,
}

/// Starts the app as a person would (no store argument: the store goes in
/// the current directory), on a free port, and waits for its URL.
fn start_app(dir: &Path) -> Res<HostApp> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host_app"))
        .args(["--port", "0"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err("start host_app"))?;
    let log = gather(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let proc = Proc { child };
    let (tx, rx) = mpsc::channel();
    let printed = Arc::new(Mutex::new(String::new()));
    let p = printed.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            p.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(i) = line.find("Open http://") {
                let url = line[i + 5..].split_whitespace().next().unwrap_or("");
                let _ = tx.send(url.to_string());
            }
        }
    });
    let base = rx.recv_timeout(BOUND).map_err(|_| {
        format!(
            "host_app printed no URL within {BOUND:?}; it printed:\n{}\n{}",
            printed.lock().unwrap(),
            log.lock().unwrap()
        )
    })?;
    if !(base.starts_with("http://127.0.0.1:") && base.ends_with('/')) {
        return Err(format!("host_app printed an odd URL: {base:?}"));
    }
    Ok(HostApp {
        proc,
        base,
        stdout: printed,
        log,
    })
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err("bind a free port"))?;
    Ok(l.local_addr().map_err(err("local address"))?.port())
}

/// Starts chromedriver and waits until it accepts connections.
fn start_driver(shots: &Path) -> Res<(Proc, String)> {
    let exe = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port()?;
    let logfile = std::fs::File::create(shots.join("chromedriver.log"))
        .map_err(err("create chromedriver.log"))?;
    let child = Command::new(&exe)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().map_err(err("log file"))?)
        .stderr(logfile)
        .spawn()
        .map_err(|e| {
            format!("cannot start {exe:?} ({e}): install chromium and chromium-driver (.ci/browser.sh does)")
        })?;
    let proc = Proc { child };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > BOUND {
            return Err(format!("chromedriver did not listen within {BOUND:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

async fn browser(driver: &str) -> Res<Client> {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ];
    args.push("--no-first-run");
    let mut opts = serde_json::json!({ "args": args });
    let bin = std::env::var("CHROME_BIN").ok().or_else(|| {
        Path::new("/usr/bin/chromium")
            .exists()
            .then(|| "/usr/bin/chromium".to_string())
    });
    if let Some(bin) = bin {
        opts["binary"] = bin.into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), opts);
    let connect = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await;
    connect.map_err(err("open a Chromium session"))
}

/// One HTTP call outside the browser, as `curl` would make it.
async fn http(method: &str, url: &str, header: (&str, &str)) -> Res<(u16, serde_json::Value)> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(HttpConnector::new());
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(header.0, header.1)
        .body(Empty::new())
        .map_err(err("build a request"))?;
    let call = async {
        let resp = client.request(req).await.map_err(err(url))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(err(url))?;
        Ok::<_, String>((status, body.to_bytes()))
    };
    let (status, body) = tokio::time::timeout(BOUND, call)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {BOUND:?}"))??;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

struct Story {
    c: Client,
    base: String,
    shots: PathBuf,
    n: usize,
}

impl Story {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    /// Keeps a screenshot of the page under the target directory.
    async fn shot(&mut self, name: &str) -> Res<()> {
        self.n += 1;
        let png = self.c.screenshot().await.map_err(err("screenshot"))?;
        let path = self.shots.join(format!("{:02}-{name}.png", self.n));
        std::fs::write(&path, png).map_err(err("write a screenshot"))
    }

    /// Waits until the browser shows `path` (with its query, if any).
    async fn wait_path(&self, path: &str) -> Res<()> {
        let start = Instant::now();
        loop {
            let u = self.c.current_url().await.map_err(err("current URL"))?;
            let here = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            if here == path {
                return Ok(());
            }
            if start.elapsed() > BOUND {
                return Err(format!("the browser stayed on {here}, expected {path}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, css: &str) -> Res<Element> {
        self.c
            .wait()
            .at_most(BOUND)
            .for_element(Locator::Css(css))
            .await
            .map_err(err(css))
    }

    async fn text(&self, css: &str) -> Res<String> {
        self.find(css).await?.text().await.map_err(err(css))
    }

    async fn click(&self, css: &str) -> Res<()> {
        self.find(css).await?.click().await.map_err(err(css))
    }

    async fn type_in(&self, css: &str, text: &str) -> Res<()> {
        let e = self.find(css).await?;
        e.clear().await.map_err(err(css))?;
        e.send_keys(text).await.map_err(err(css))
    }

    async fn login(&mut self, user: &str) -> Res<()> {
        self.c.goto(&self.base).await.map_err(err("open the app"))?;
        self.wait_path("/login").await?;
        self.type_in("#username", user).await?;
        self.type_in("#password", "demo").await?;
        self.shot(&format!("login-{user}")).await?;
        self.click("#login").await?;
        self.wait_path("/profile").await?;
        let who = self.text("#who").await?;
        if !who.to_lowercase().contains(user) {
            return Err(format!("signed in as {user}, the header says {who:?}"));
        }
        Ok(())
    }

    async fn logout(&mut self) -> Res<()> {
        self.click("#logout").await?;
        self.wait_path("/login").await
    }

    /// The id (`token-…` row id) of the row of `table` whose label is `label`.
    async fn row_of(&self, table: &str, label: &str) -> Res<String> {
        self.find(table).await?;
        let rows = self
            .c
            .find_all(Locator::Css(&format!("{table} tr[id]")))
            .await
            .map_err(err(table))?;
        for r in rows {
            let l = r
                .find(Locator::Css("td.label"))
                .await
                .map_err(err("label cell"))?;
            if l.text().await.map_err(err("label"))? == label {
                return r
                    .attr("id")
                    .await
                    .map_err(err("row id"))?
                    .ok_or_else(|| "a row without id".to_string());
            }
        }
        Err(format!("no row labelled {label:?} in {table}"))
    }
}

fn expect(cond: bool, what: impl FnOnce() -> String) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// The story; answers the secrets it saw, to check the log never shows them.
async fn story(s: &mut Story, secrets: &mut Vec<String>) -> Res<()> {
    // 1. The first page, after redirects, is the login form.
    s.c.goto(&s.base).await.map_err(err("open the app"))?;
    s.wait_path("/login").await?;
    s.shot("first-page").await?;

    // 2. The Owner assigns a token to the User.
    s.login("olivia").await?;
    s.shot("owner-profile").await?;
    s.click("#nav-settings").await?;
    s.wait_path("/settings/api-tokens").await?;
    let mut picker = Vec::new();
    for o in
        s.c.find_all(Locator::Css("#assign-user option"))
            .await
            .map_err(err("picker"))?
    {
        picker.push(
            o.attr("value")
                .await
                .map_err(err("option"))?
                .unwrap_or_default(),
        );
    }
    expect(picker == ["adam", "uma"], || {
        format!("the picker should offer the Admin and the User, offers {picker:?}")
    })?;
    s.shot("settings-api-tokens").await?;
    s.find("#assign-user")
        .await?
        .select_by_value("uma")
        .await
        .map_err(err("pick uma"))?;
    s.type_in("#assign-label", "ops runbook").await?;
    s.click("#assign").await?;
    s.wait_path("/settings/api-tokens/assign").await?;
    let assigned = s.text("#assigned-token").await?;
    secrets.push(assigned.clone());
    expect(assigned.starts_with("tvr_"), || {
        format!("the assigned secret is shown once: {assigned:?}")
    })?;
    let row = s.row_of("#org-tokens", "ops runbook").await?;
    let member = s.text(&format!("#{row} td.member")).await?;
    expect(member == "uma", || format!("assigned to {member:?}"))?;
    s.shot("assigned").await?;
    s.logout().await?;

    // 3. The User sees it on their profile, and may not open the settings.
    s.login("uma").await?;
    let row = s.row_of("#my-tokens", "ops runbook").await?;
    let by = s.text(&format!("#{row} td.assigned-by")).await?;
    expect(by == "olivia", || format!("assigned by {by:?}"))?;
    s.shot("user-profile-assigned").await?;
    s.c.goto(&s.url("/settings/api-tokens"))
        .await
        .map_err(err("open settings"))?;
    let refusal = s.text("#refusal").await?;
    expect(refusal.contains("Owner only"), || {
        format!("a User gets the 403 page, got {refusal:?}")
    })?;
    s.shot("user-settings-403").await?;
    let (status, _) = http(
        "GET",
        &s.url("/settings/api-tokens"),
        ("Accept", "text/html"),
    )
    .await?;
    expect(status == 303, || {
        format!("without a session the settings redirect to the login, got {status}")
    })?;

    // 4. The User generates a token and copies it from the page.
    s.c.goto(&s.url("/profile")).await.map_err(err("profile"))?;
    s.type_in("#label", "laptop").await?;
    s.find("#expires")
        .await?
        .select_by_value("30")
        .await
        .map_err(err("expiry"))?;
    s.click("#generate").await?;
    s.wait_path("/profile/tokens").await?;
    let secret = s.text("#new-token").await?;
    secrets.push(secret.clone());
    expect(secret.starts_with("tvr_") && secret.len() > 40, || {
        format!("the page shows the new secret, got {secret:?}")
    })?;
    let line = s.text("#curl-exchange").await?;
    let want = format!(
        "curl -s -H \"X-Refresh-Token: {secret}\" {}",
        s.url("oauth/access-token")
    );
    expect(line == want, || {
        format!("curl line {line:?}, expected {want:?}")
    })?;
    s.shot("user-new-token").await?;

    // 5. Over HTTP, as the page's curl lines say.
    let (status, body) = http(
        "GET",
        &s.url("oauth/access-token"),
        ("X-Refresh-Token", &secret),
    )
    .await?;
    expect(status == 200, || format!("exchange: {status} {body}"))?;
    let access = body["data"]["access_token"]
        .as_str()
        .ok_or_else(|| format!("no access token in {body}"))?
        .to_string();
    let bearer = format!("Bearer {access}");
    let user_line = s.text("#curl-user-route").await?;
    expect(user_line.ends_with(&s.url("api/incidents")), || {
        format!("user route line {user_line:?}")
    })?;
    let (status, body) = http("POST", &s.url("api/incidents"), ("Authorization", &bearer)).await?;
    expect(status == 200 && body["data"]["by"] == "uma", || {
        format!("the User route answers 200 to a User's token: {status} {body}")
    })?;
    let (status, body) = http("POST", &s.url("api/services"), ("Authorization", &bearer)).await?;
    expect(status == 403, || {
        format!("the Admin route answers 403 to a User's token: {status} {body}")
    })?;

    // 6. Revoke it on the page: the secret is not shown again; the same
    //    access token then answers 401.
    s.c.goto(&s.url("/profile")).await.map_err(err("profile"))?;
    let row = s.row_of("#my-tokens", "laptop").await?;
    let page = s.c.source().await.map_err(err("page source"))?;
    expect(!page.contains(&secret), || {
        "the secret is shown again".into()
    })?;
    s.click(&format!("#{row} button.revoke")).await?;
    s.wait_path("/profile?done=revoked").await?;
    let state = s.text(&format!("#{row} td.state")).await?;
    expect(state.starts_with("revoked"), || {
        format!("state after revoke: {state:?}")
    })?;
    let other = s.row_of("#my-tokens", "ops runbook").await?;
    let state = s.text(&format!("#{other} td.state")).await?;
    expect(state == "active", || {
        format!("the assigned token stays active: {state:?}")
    })?;
    s.shot("user-revoked").await?;
    let (status, body) = http("POST", &s.url("api/incidents"), ("Authorization", &bearer)).await?;
    expect(status == 401, || {
        format!("a revoked token's access token answers 401: {status} {body}")
    })?;
    let (status, _) = http(
        "GET",
        &s.url("oauth/access-token"),
        ("X-Refresh-Token", &secret),
    )
    .await?;
    expect(status == 401, || {
        format!("a revoked refresh token exchanges: {status}")
    })?;
    s.logout().await?;

    // 7. Members: the Owner demotes the User, which cuts the assigned
    //    token's scopes at once, then removes her, which revokes it.
    s.login("olivia").await?;
    s.click("#nav-members").await?;
    s.wait_path("/members").await?;
    let role = s.text("#member-uma td.role").await?;
    expect(role == "User", || format!("uma's role: {role:?}"))?;
    s.shot("members").await?;
    s.find("#member-uma select[name=role]")
        .await?
        .select_by_value("stakeholder")
        .await
        .map_err(err("pick a role"))?;
    s.click("#member-uma button.change-role").await?;
    s.wait_path("/members?done=role").await?;
    let role = s.text("#member-uma td.role").await?;
    expect(role == "Stakeholder", || {
        format!("uma's role after demotion: {role:?}")
    })?;
    let (status, body) = http(
        "GET",
        &s.url("oauth/access-token"),
        ("X-Refresh-Token", &assigned),
    )
    .await?;
    expect(status == 200, || {
        format!("exchange of the assigned token: {status} {body}")
    })?;
    let demoted = format!(
        "Bearer {}",
        body["data"]["access_token"].as_str().unwrap_or("")
    );
    let (status, _) = http("POST", &s.url("api/incidents"), ("Authorization", &demoted)).await?;
    expect(status == 403, || {
        format!("a demoted member's token keeps a User scope: {status}")
    })?;
    s.click("#nav-settings").await?;
    s.wait_path("/settings/api-tokens").await?;
    let row = s.row_of("#org-tokens", "ops runbook").await?;
    let scopes = s.text(&format!("#{row} td.scopes")).await?;
    expect(scopes == "read squad-read", || {
        format!("scopes in force after demotion: {scopes:?}")
    })?;
    s.shot("settings-after-demotion").await?;
    s.click("#nav-members").await?;
    s.wait_path("/members").await?;
    s.click("#member-uma button.remove").await?;
    s.wait_path("/members?done=removed&n=1").await?;
    s.shot("members-after-removal").await?;
    let (status, _) = http("POST", &s.url("api/incidents"), ("Authorization", &demoted)).await?;
    expect(status == 401, || {
        format!("a removed member's token still works: {status}")
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_in_a_real_browser() {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("host-app-browser");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut app = start_app(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let printed = app.stdout.lock().unwrap().clone();
    assert!(
        printed.contains("olivia (Owner)") && printed.contains("uma (User)"),
        "host_app prints the demo logins: {printed}"
    );
    let (driver, driver_url) = start_driver(&shots).unwrap_or_else(|e| panic!("{e}"));
    let client = browser(&driver_url).await.unwrap_or_else(|e| panic!("{e}"));
    let mut s = Story {
        c: client,
        base: app.base.clone(),
        shots: shots.clone(),
        n: 0,
    };
    let mut secrets = Vec::new();
    let outcome = story(&mut s, &mut secrets).await;
    if outcome.is_err() {
        let _ = s.shot("failure").await;
    }
    let _ = s.c.close().await;
    drop(driver);
    if let Err(e) = outcome {
        panic!(
            "{e}\nscreenshots: {}\nhost_app log:\n{}",
            shots.display(),
            app.log.lock().unwrap()
        );
    }

    // Graceful shutdown: SIGTERM, then the store's close is logged.
    let pid = app.proc.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid}: {sent}");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = app.proc.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < BOUND,
            "host_app did not stop within {BOUND:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The stderr thread may still be reading the last lines.
    let start = Instant::now();
    while !app.log.lock().unwrap().contains("store closed") && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = app.log.lock().unwrap().clone();
    assert!(status.success(), "host_app exit: {status}\n{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(
        log.contains("store closed: checkpoint and warm-start files written"),
        "{log}"
    );
    assert!(
        dir.path().join("host_app.db").is_dir(),
        "with no argument the store is made in the current directory"
    );
    assert_eq!(secrets.len(), 2);
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}
