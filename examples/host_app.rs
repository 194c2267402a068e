//! A web app that embeds tokenvault: the two screens of the product, to
//! click through in a browser.
//!
//! ```text
//! cargo run --example host_app                 # store in ./host_app.db
//! cargo run --example host_app -- --temporary  # a throwaway store
//! ```
//!
//! It prints `http://127.0.0.1:PORT/` and the demo logins, then serves until
//! Ctrl-C or SIGTERM, when it closes the store and logs the result.
//!
//! What a host app brings and what tokenvault does:
//!
//! - **The app's own users and login.** Four people of the organization
//!   "Acme Corp": olivia (the Owner), adam (Admin), uma (User) and sam
//!   (Stakeholder). The login is a DEMO LOGIN: one shared password, sessions
//!   in memory, a cookie holding a random session id. Your app has its own.
//!   Roles live in tokenvault's member records, which the app keeps through
//!   the membership calls (`add_member`, `set_role`, `remove_member`).
//! - **My Profile › API Refresh Token** (`/profile`): generate a token
//!   (label, optional expiry), its secret shown once; the member's tokens,
//!   those the Owner assigned included; revoke.
//! - **Settings › API Tokens** (`/settings/api-tokens`, Owner only): every
//!   token of the organization, Assign Token To User, revoke any, the audit
//!   trail.
//! - **Members** (`/members`, Owner only): change a role, remove, add back.
//! - **The API**: tokenvault's token endpoints (`GET /oauth/access-token`
//!   and the rest of `tokenvault::http`) mounted beside two routes of the
//!   app guarded by tokenvault's tower layer: `POST /api/incidents` needs
//!   the User scope `incident-write`, `POST /api/services` the Admin scope
//!   `service-write`.
//!
//! Pages are rendered on the server, every value escaped; no JavaScript.
//! Forms carry a per-session token against cross-site requests.
//!
//! Store calls that may touch the disk run through [`blocking`], one small
//! helper that moves them off the async workers (`spawn_blocking`);
//! verification (the tower layer) and the member look-ups read memory only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokenvault::http::{require_scope, Authorized, HttpConfig};
use tokenvault::{
    Actor, AuditEvent, Error, GenerateOptions, Role, TokenId, TokenInfo, TokenState, TokenStore,
};

/// The organization of the demo.
const ORG: &str = "acme";
const ORG_NAME: &str = "Acme Corp";
/// The app's own users: id, name, role when the organization is first made.
const USERS: [(&str, &str, Role); 4] = [
    ("olivia", "Olivia Owens", Role::Owner),
    ("adam", "Adam Abbott", Role::Admin),
    ("uma", "Uma Ulrich", Role::User),
    ("sam", "Sam Sutter", Role::Stakeholder),
];
/// The demo login's one password. A demo: a real app checks its own users.
const DEMO_PASSWORD: &str = "demo";
const SESSION_COOKIE: &str = "host_app_session";
const MAX_SESSIONS: usize = 1000;
/// The scope of the User route and of the Admin route (tokenvault's default
/// policy: a User holds `incident-write`, only an Admin or the Owner holds
/// `service-write`).
const USER_SCOPE: &str = "incident-write";
const ADMIN_SCOPE: &str = "service-write";
const DEFAULT_STORE: &str = "host_app.db";
const DEFAULT_PORT: u16 = 8080;
const USAGE: &str = "\
host_app: a demo web app embedding tokenvault

usage: cargo run --example host_app -- [--temporary] [--store PATH] [--port N]

  --temporary    a throwaway store, deleted at exit
  --store PATH   the store's directory (default ./host_app.db, its key beside it)
  --port N       the port on 127.0.0.1 (default 8080, or a free one if 8080 is
                 taken; 0 for any free port)
  --help         this text
";

// ---------------------------------------------------------------------------
// Start and stop

struct Args {
    temporary: bool,
    store: PathBuf,
    port: Option<u16>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        temporary: false,
        store: PathBuf::from(DEFAULT_STORE),
        port: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--temporary" => args.temporary = true,
            "--store" => {
                let v = it.next().ok_or("--store needs a path")?;
                args.store = PathBuf::from(v);
            }
            "--port" => {
                let v = it.next().ok_or("--port needs a number")?;
                let p = v
                    .parse::<u16>()
                    .map_err(|_| format!("--port takes a number from 0 to 65535, not {v:?}"))?;
                args.port = Some(p);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("host_app: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Before the runtime: opening reads the disk.
    let opened = if args.temporary {
        TokenStore::temporary()
    } else {
        TokenStore::open(&args.store)
    };
    let store = match opened.and_then(|s| seed(&s).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("host_app: cannot open the store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("host_app: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let where_ = if args.temporary {
        "a temporary store".to_string()
    } else {
        format!("the store {}", args.store.display())
    };
    let served = rt.block_on(serve(store.clone(), args.port, where_));
    // Every task, and with them every other handle of the store, goes with
    // the runtime; `close` is then the last handle's (a checkpoint).
    drop(rt);
    let closed = store.close();
    match &closed {
        Ok(report) => tracing::info!("store {report}"),
        Err(e) => tracing::error!(kind = e.kind(), "store close failed: {e}"),
    }
    match (served, closed) {
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("host_app: {e}");
            ExitCode::FAILURE
        }
        (_, Err(_)) => ExitCode::FAILURE,
    }
}

/// Makes the organization on first start. Its members then live in the
/// store: a later start leaves them as the Owner left them.
fn seed(store: &TokenStore) -> tokenvault::Result<()> {
    if !store.members(ORG).is_empty() {
        return Ok(());
    }
    for (user, _, role) in USERS {
        store.add_member(ORG, user, role)?;
    }
    Ok(())
}

async fn serve(store: TokenStore, port: Option<u16>, where_: String) -> std::io::Result<()> {
    let listener = match port {
        Some(p) => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p))
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on 127.0.0.1:{p}: {e} (--port 0 takes a free port)"),
                )
            })?,
        None => match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, DEFAULT_PORT)).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::info!("port {DEFAULT_PORT} is taken; using a free one");
                tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?
            }
            Err(e) => return Err(e),
        },
    };
    let addr: SocketAddr = listener.local_addr()?;
    let base = format!("http://{addr}/");
    let cfg = HttpConfig::default();
    let app = App {
        store: store.clone(),
        sessions: Arc::new(Mutex::new(HashMap::new())),
        base: base.clone(),
    };
    let router = router(app, &cfg);
    println!("host_app: {ORG_NAME}, on {where_}");
    println!(
        "demo logins (a demo login: one password, {DEMO_PASSWORD:?}, for everyone): \
         olivia (Owner), adam (Admin), uma (User), sam (Stakeholder)"
    );
    println!("Open {base}   (Ctrl-C to stop)");
    tokenvault::http::serve_on(listener, router, &cfg, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

fn router(app: App, cfg: &HttpConfig) -> Router {
    let store = app.store.clone();
    let pages = Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/profile", get(profile))
        .route("/profile/tokens", post(generate))
        .route("/profile/tokens/{id}/revoke", post(revoke_own))
        .route("/settings/api-tokens", get(settings))
        .route("/settings/api-tokens/assign", post(assign))
        .route("/settings/api-tokens/{id}/revoke", post(revoke_any))
        .route("/members", get(members))
        .route("/members/{user}/role", post(change_role))
        .route("/members/{user}/remove", post(remove_member))
        .route("/members/{user}/add", post(add_member))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(app);
    // The app's own API, guarded by tokenvault's tower layer.
    let api = Router::new()
        .route(
            "/api/incidents",
            post(file_incident).layer(require_scope(&store, USER_SCOPE)),
        )
        .route(
            "/api/services",
            post(create_service).layer(require_scope(&store, ADMIN_SCOPE)),
        );
    pages
        .merge(api)
        // GET /oauth/access-token and the rest of tokenvault's endpoints.
        .merge(tokenvault::http::router_with(store, cfg))
        .fallback(not_found)
}

/// Runs a store call that may block (it touches the disk: issue, revoke,
/// lists, audit, membership) on tokio's blocking pool, off the async
/// workers. The one place to swap for tokenvault's async face.
async fn blocking<T, F>(store: &TokenStore, call: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&TokenStore) -> tokenvault::Result<T> + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => {
            tracing::error!("a store call did not finish: {e}");
            Err(Failure::internal())
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions (the demo login)

#[derive(Clone)]
struct App {
    store: TokenStore,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    base: String,
}

#[derive(Clone)]
struct Session {
    user: &'static str,
    /// Echoed by every form of the session: a cross-site form lacks it.
    csrf: String,
}

/// The signed-in member of a request.
struct Me {
    user: &'static str,
    name: &'static str,
    role: Role,
    csrf: String,
}

impl Me {
    fn actor(&self) -> Actor {
        Actor::new(ORG, self.user)
    }
    fn check(&self, csrf: &str) -> Result<(), Failure> {
        if csrf.len() == self.csrf.len() && csrf == self.csrf {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Stale form",
                "This form is from another session. Reload the page and try again.",
            ))
        }
    }
    fn owner_only(&self, page: &str) -> Result<(), Failure> {
        if self.role == Role::Owner {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "403 — Owner only",
                &format!(
                    "{page} is for the Account Owner of {ORG_NAME}. You are {} here.",
                    role_name(self.role)
                ),
            ))
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let id = session_id(headers)?;
    app.sessions.lock().ok()?.get(id).cloned()
}

fn user_entry(user: &str) -> Option<(&'static str, &'static str, Role)> {
    USERS.iter().copied().find(|(u, _, _)| *u == user)
}

impl FromRequestParts<App> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Me, Response> {
        let Some(s) = session(app, &parts.headers) else {
            return Err(Redirect::to("/login").into_response());
        };
        let name = user_entry(s.user).map_or(s.user, |(_, n, _)| n);
        // The role is tokenvault's member record (memory, no disk).
        let Some(role) = app.store.member_role(ORG, s.user) else {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "403 — Not a member",
                &format!(
                    "{name}, you are not a member of {ORG_NAME} any more. Sign out, \
                     or ask the Owner to add you back."
                ),
            )
            .with_logout(&s.csrf)
            .into_response());
        };
        Ok(Me {
            user: s.user,
            name,
            role,
            csrf: s.csrf,
        })
    }
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

async fn home(State(app): State<App>, headers: HeaderMap) -> Redirect {
    if session(&app, &headers).is_some() {
        Redirect::to("/profile")
    } else {
        Redirect::to("/login")
    }
}

async fn login_form() -> Html<String> {
    login_page(None)
}

fn login_page(error: Option<&str>) -> Html<String> {
    let mut b = String::new();
    b.push_str(
        "<h1>Sign in to Acme Corp</h1>\
         <p class=\"warn\"><strong>Demo login.</strong> One shared password, sessions kept in \
         memory: this stands for your app's own login, and is not one to copy.</p>",
    );
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" id=\"login-error\">{}</p>", esc(e));
    }
    b.push_str(
        "<form method=\"post\" action=\"/login\" class=\"card narrow\">\
         <label>User <input id=\"username\" name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <button id=\"login\" type=\"submit\">Sign in</button></form>\
         <h2>Demo logins</h2><table><tr><th>user</th><th>password</th><th>role at start</th></tr>",
    );
    for (u, n, r) in USERS {
        let _ = write!(
            b,
            "<tr><td><code>{u}</code> ({})</td><td><code>{DEMO_PASSWORD}</code></td><td>{}</td></tr>",
            esc(n),
            role_name(r)
        );
    }
    b.push_str("</table>");
    Html(layout("Sign in", None, &b))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(State(app): State<App>, Form(f): Form<LoginForm>) -> Response {
    let user = match user_entry(f.username.trim()) {
        Some((u, _, _)) if f.password == DEMO_PASSWORD => u,
        _ => {
            let mut r = login_page(Some("Unknown user or wrong password.")).into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    };
    let id = random_hex();
    let s = Session {
        user,
        csrf: random_hex(),
    };
    {
        let Ok(mut sessions) = app.sessions.lock() else {
            return Failure::internal().into_response();
        };
        if sessions.len() >= MAX_SESSIONS {
            // A demo's bound: forget some session rather than grow.
            if let Some(k) = sessions.keys().next().cloned() {
                sessions.remove(&k);
            }
        }
        sessions.insert(id.clone(), s);
    }
    tracing::info!(user, "signed in");
    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax");
    let mut r = Redirect::to("/profile").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(app): State<App>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Some(id) = session_id(&headers) {
        if let Ok(mut sessions) = app.sessions.lock() {
            if sessions.get(id).is_some_and(|s| s.csrf == f.csrf) {
                sessions.remove(id);
            }
        }
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("host_app_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

// ---------------------------------------------------------------------------
// My Profile › API Refresh Token

#[derive(serde::Deserialize)]
struct Notice {
    done: Option<String>,
    n: Option<u64>,
}

/// A fixed message for a redirect's `?done=`: nothing from the URL is shown.
fn notice_text(q: &Notice) -> Option<String> {
    let n = q.n.unwrap_or(0);
    Some(match q.done.as_deref()? {
        "revoked" => "Token revoked, with every access token derived from it.".into(),
        "role" => "Role changed. That member's tokens are cut to the new role at once.".into(),
        "removed" => format!("Member removed; {n} of their tokens revoked."),
        "added" => "Member added.".into(),
        _ => return None,
    })
}

async fn profile(State(app): State<App>, me: Me, Query(q): Query<Notice>) -> Response {
    let notice = notice_text(&q);
    match profile_page(&app, &me, None, notice.as_deref()).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

/// A secret just made, shown on this one response.
struct Fresh {
    secret: String,
    label: String,
}

async fn profile_page(
    app: &App,
    me: &Me,
    fresh: Option<Fresh>,
    notice: Option<&str>,
) -> Result<Response, Failure> {
    let actor = me.actor();
    let mut tokens = blocking(&app.store, move |s| s.list_own(&actor)).await?;
    tokens.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    let policy = app.store.policy();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>My Profile</h1><p>{} (<code>{}</code>), <strong id=\"my-role\">{}</strong> of {ORG_NAME}. \
         A token of yours can do what a {} may: <code>{}</code>.</p>",
        esc(me.name),
        me.user,
        role_name(me.role),
        role_name(me.role),
        esc(&policy.scopes_of(me.role).join(" "))
    );
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\" id=\"notice\">{}</p>", esc(n));
    }
    b.push_str("<h2>API Refresh Token</h2>");
    if let Some(f) = &fresh {
        let _ = write!(
            b,
            "<div class=\"card fresh\"><p>Your new token <strong>{}</strong>. Copy it now: it is \
             shown this once and kept nowhere.</p><p><code id=\"new-token\" class=\"secret\">{}</code></p>\
             <p class=\"warn\">Please keep your Refresh Token as safe as your Password.</p></div>",
            esc(&f.label),
            esc(&f.secret)
        );
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/profile/tokens\" class=\"card row\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Label <input id=\"label\" name=\"label\" maxlength=\"64\" placeholder=\"e.g. laptop\"></label>\
         {}<button id=\"generate\" type=\"submit\">Generate New Token</button></form>",
        esc(&me.csrf),
        expiry_select("expires")
    );
    b.push_str("<table id=\"my-tokens\"><tr><th>label</th><th>created</th><th>expires</th><th>last used</th><th>state</th><th>assigned by</th><th></th></tr>");
    for t in &tokens {
        let assigned = if t.created_by == me.user {
            "—".to_string()
        } else {
            esc(&t.created_by)
        };
        let _ = write!(
            b,
            "<tr id=\"token-{id}\" class=\"state-{st}\"><td class=\"label\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"state\">{}</td><td class=\"assigned-by\">{assigned}</td><td>{}</td></tr>",
            label_of(t),
            fmt_time(t.created_at),
            t.expires_at.map_or("never".into(), fmt_time),
            t.last_refresh.map_or("never".into(), fmt_time),
            state_text(&t.state),
            revoke_button(&format!("/profile/tokens/{}/revoke", t.id), &me.csrf, t),
            id = t.id,
            st = t.state.as_str(),
        );
    }
    if tokens.is_empty() {
        b.push_str("<tr><td colspan=\"7\">No tokens yet.</td></tr>");
    }
    b.push_str("</table>");
    curl_lines(&mut b, &app.base, fresh.as_ref().map(|f| f.secret.as_str()));
    let mut r = Html(layout("My Profile", Some(me), &b)).into_response();
    if fresh.is_some() {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(r)
}

fn curl_lines(b: &mut String, base: &str, secret: Option<&str>) {
    let token = secret.unwrap_or("YOUR_REFRESH_TOKEN");
    let _ = write!(
        b,
        "<h2>Use it</h2><p>Exchange the refresh token for an access token, then call the API \
         with <code>data.access_token</code> from the answer in place of \
         <code>ACCESS_TOKEN</code>:</p><pre>\
         <span id=\"curl-exchange\">curl -s -H \"X-Refresh-Token: {t}\" {b}oauth/access-token</span>\n\
         <span id=\"curl-user-route\">curl -s -X POST -H \"Authorization: Bearer ACCESS_TOKEN\" {b}api/incidents</span>\n\
         <span id=\"curl-admin-route\">curl -s -X POST -H \"Authorization: Bearer ACCESS_TOKEN\" {b}api/services</span></pre>\
         <p><code>/api/incidents</code> needs <code>{USER_SCOPE}</code> (a User's scope); \
         <code>/api/services</code> needs <code>{ADMIN_SCOPE}</code> (an Admin's): a User's \
         token gets 403 there, a revoked one 401 everywhere.</p>",
        t = esc(token),
        b = esc(base),
    );
}

#[derive(serde::Deserialize)]
struct GenerateForm {
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    expires: String,
}

/// The expiry picker: days, or none.
fn expiry_select(id: &str) -> String {
    let mut s = format!(
        "<label>Expires <select id=\"{id}\" name=\"expires\"><option value=\"\">never</option>"
    );
    for (v, t) in [
        ("1", "in 1 day"),
        ("7", "in 7 days"),
        ("30", "in 30 days"),
        ("90", "in 90 days"),
        ("365", "in a year"),
    ] {
        let _ = write!(s, "<option value=\"{v}\">{t}</option>");
    }
    s.push_str("</select></label>");
    s
}

/// The options of a generate or assign form, or a clear refusal.
fn options(label: &str, expires: &str) -> Result<(GenerateOptions, String), Failure> {
    let mut o = GenerateOptions::default();
    let label = label.trim();
    if !label.is_empty() {
        o = o.label(label);
    }
    let expires = expires.trim();
    if !expires.is_empty() {
        match expires.parse::<u64>() {
            Ok(d @ 1..=3650) => o = o.expires_in(d * 86_400),
            _ => {
                return Err(Failure::new(
                    StatusCode::BAD_REQUEST,
                    "Bad expiry",
                    "The expiry is a number of days from 1 to 3650, or none.",
                ))
            }
        }
    }
    let shown = if label.is_empty() {
        "(no label)"
    } else {
        label
    };
    Ok((o, shown.to_string()))
}

async fn generate(State(app): State<App>, me: Me, Form(f): Form<GenerateForm>) -> Response {
    let run = async {
        me.check(&f.csrf)?;
        let (opts, label) = options(&f.label, &f.expires)?;
        let actor = me.actor();
        let issued = blocking(&app.store, move |s| s.generate(&actor, opts)).await?;
        tracing::info!(user = me.user, id = %issued.info.id, "token generated");
        let fresh = Fresh {
            secret: issued.token.expose().to_string(),
            label,
        };
        profile_page(&app, &me, Some(fresh), None).await
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

async fn revoke_own(
    State(app): State<App>,
    me: Me,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    revoke(
        app,
        me,
        id,
        f,
        "/profile?done=revoked",
        "revoked on the profile page",
    )
    .await
}

async fn revoke(
    app: App,
    me: Me,
    id: String,
    f: CsrfForm,
    back: &'static str,
    reason: &'static str,
) -> Response {
    let run = async {
        me.check(&f.csrf)?;
        let id = TokenId::from_str(&id).map_err(Failure::from)?;
        let actor = me.actor();
        // tokenvault applies the policy: a member revokes their own, the
        // Owner any of the organization's.
        blocking(&app.store, move |s| s.revoke(&actor, &id, Some(reason))).await?;
        tracing::info!(user = me.user, %id, "token revoked");
        Ok::<_, Failure>(Redirect::to(back).into_response())
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

// ---------------------------------------------------------------------------
// Settings › API Tokens (Owner only)

async fn settings(State(app): State<App>, me: Me, Query(q): Query<Notice>) -> Response {
    let notice = notice_text(&q);
    settings_page(&app, &me, None, notice.as_deref())
        .await
        .unwrap_or_else(|f| f.into_response())
}

/// A token just assigned: to whom, and its secret for this one response.
struct Assigned {
    user: String,
    secret: String,
}

async fn settings_page(
    app: &App,
    me: &Me,
    assigned: Option<Assigned>,
    notice: Option<&str>,
) -> Result<Response, Failure> {
    me.owner_only("Settings › API Tokens")?;
    let actor = me.actor();
    let (mut tokens, events) = blocking(&app.store, move |s| {
        Ok((s.list_org(&actor)?, s.audit(&actor, 15)?))
    })
    .await?;
    tokens.sort_by_key(|t| std::cmp::Reverse(t.created_at));
    let members = app.store.members(ORG);
    let policy = app.store.policy();
    let mut b = String::from("<h1>Settings › API Tokens</h1>");
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"notice\" id=\"notice\">{}</p>", esc(n));
    }
    if let Some(a) = &assigned {
        let _ = write!(
            b,
            "<div class=\"card fresh\"><p>Token assigned to <strong>{}</strong>; it shows on their \
             My Profile page. Its secret, shown this once: hand it over on a safe channel.</p>\
             <p><code id=\"assigned-token\" class=\"secret\">{}</code></p>\
             <p class=\"warn\">Please keep your Refresh Token as safe as your Password.</p></div>",
            esc(&a.user),
            esc(&a.secret)
        );
    }
    let _ = write!(
        b,
        "<h2>Assign Token To User</h2><form method=\"post\" action=\"/settings/api-tokens/assign\" class=\"card row\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>Member <select id=\"assign-user\" name=\"user\">",
        esc(&me.csrf)
    );
    for (u, r) in members.iter().filter(|(_, r)| pickable(*r)) {
        let _ = write!(
            b,
            "<option value=\"{u}\">{} ({})</option>",
            esc(u),
            role_name(*r),
            u = esc(u)
        );
    }
    let _ = write!(
        b,
        "</select></label><label>Label <input id=\"assign-label\" name=\"label\" maxlength=\"64\"></label>{}\
         <button id=\"assign\" type=\"submit\">Assign Token To User</button></form>",
        expiry_select("assign-expires")
    );
    b.push_str(
        "<h2>Tokens of the organization</h2><p>Scopes are cut at each use to the member's \
         current role: a demotion shows here at once.</p><table id=\"org-tokens\"><tr><th>member</th>\
         <th>label</th><th>created</th><th>expires</th><th>last used</th><th>state</th><th>assigned by</th>\
         <th>scopes in force</th><th></th></tr>",
    );
    for t in &tokens {
        let now = members.iter().find(|(u, _)| *u == t.user).map(|(_, r)| *r);
        let in_force = match now {
            Some(r) if t.state == TokenState::Active => {
                let allowed = policy.scopes_of(r);
                let s: Vec<&str> = t
                    .scopes
                    .iter()
                    .filter(|s| allowed.contains(s))
                    .map(String::as_str)
                    .collect();
                esc(&s.join(" "))
            }
            Some(_) => "none".to_string(),
            None => "none (not a member)".to_string(),
        };
        let assigned = if t.created_by == t.user {
            "—".to_string()
        } else {
            esc(&t.created_by)
        };
        let _ = write!(
            b,
            "<tr id=\"org-token-{id}\" class=\"state-{st}\"><td class=\"member\">{}</td><td class=\"label\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{assigned}</td>\
             <td class=\"scopes\"><code>{in_force}</code></td><td>{}</td></tr>",
            esc(&t.user),
            label_of(t),
            fmt_time(t.created_at),
            t.expires_at.map_or("never".into(), fmt_time),
            t.last_refresh.map_or("never".into(), fmt_time),
            state_text(&t.state),
            revoke_button(&format!("/settings/api-tokens/{}/revoke", t.id), &me.csrf, t),
            id = t.id,
            st = t.state.as_str(),
        );
    }
    if tokens.is_empty() {
        b.push_str("<tr><td colspan=\"9\">No tokens yet.</td></tr>");
    }
    b.push_str("</table><h2>Recent audit events</h2><table id=\"audit\"><tr><th>#</th><th>when</th><th>who</th><th>what</th><th>on</th><th>outcome</th></tr>");
    for e in &events {
        audit_row(&mut b, e);
    }
    b.push_str("</table>");
    let mut r = Html(layout("Settings › API Tokens", Some(me), &b)).into_response();
    if assigned.is_some() {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(r)
}

fn audit_row(b: &mut String, e: &AuditEvent) {
    let times = if e.count > 1 {
        format!(" (×{})", e.count)
    } else {
        String::new()
    };
    let _ = write!(
        b,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}{times}</td></tr>",
        e.seq,
        fmt_time(e.at),
        esc(&e.actor),
        esc(&e.action),
        esc(e.target.as_deref().unwrap_or("")),
        esc(&e.outcome),
    );
}

/// Who the Owner may assign a token to: the seed's "any User or Admin".
fn pickable(r: Role) -> bool {
    matches!(r, Role::User | Role::Admin)
}

#[derive(serde::Deserialize)]
struct AssignForm {
    csrf: String,
    user: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    expires: String,
}

async fn assign(State(app): State<App>, me: Me, Form(f): Form<AssignForm>) -> Response {
    let run = async {
        me.owner_only("Settings › API Tokens")?;
        me.check(&f.csrf)?;
        let (opts, _) = options(&f.label, &f.expires)?;
        if !app.store.member_role(ORG, &f.user).is_some_and(pickable) {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "Pick a User or an Admin",
                "A token is assigned to a User or an Admin of the organization.",
            ));
        }
        let actor = me.actor();
        let user = f.user.clone();
        let issued = blocking(&app.store, move |s| s.assign(&actor, &user, opts)).await?;
        tracing::info!(by = me.user, to = %f.user, id = %issued.info.id, "token assigned");
        let a = Assigned {
            user: f.user,
            secret: issued.token.expose().to_string(),
        };
        settings_page(&app, &me, Some(a), None).await
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

async fn revoke_any(
    State(app): State<App>,
    me: Me,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(f) = me.owner_only("Settings › API Tokens") {
        return f.into_response();
    }
    revoke(
        app,
        me,
        id,
        f,
        "/settings/api-tokens?done=revoked",
        "revoked by the Owner",
    )
    .await
}

// ---------------------------------------------------------------------------
// Members (Owner only)

async fn members(State(app): State<App>, me: Me, Query(q): Query<Notice>) -> Response {
    let run = async {
        me.owner_only("Members")?;
        let actor = me.actor();
        let tokens = blocking(&app.store, move |s| s.list_org(&actor)).await?;
        let members = app.store.members(ORG);
        let policy = app.store.policy();
        let mut b = String::from(
            "<h1>Members</h1><p>Roles are tokenvault's member records, changed through its \
             membership calls: a demotion cuts the member's tokens to the new role at once, a \
             removal revokes them.</p>",
        );
        if let Some(n) = notice_text(&q) {
            let _ = write!(b, "<p class=\"notice\" id=\"notice\">{}</p>", esc(&n));
        }
        b.push_str("<table id=\"members\"><tr><th>member</th><th>role</th><th>active tokens</th><th>scopes of the role</th><th></th></tr>");
        for (u, r) in &members {
            let active = tokens
                .iter()
                .filter(|t| t.user == *u && t.state == TokenState::Active)
                .count();
            let name = user_entry(u).map_or("", |(_, n, _)| n);
            let _ = write!(
                b,
                "<tr id=\"member-{u}\"><td>{} <code>{u}</code></td><td class=\"role\">{}</td><td>{active}</td><td><code>{}</code></td><td>",
                esc(name),
                role_name(*r),
                esc(&policy.scopes_of(*r).join(" ")),
                u = esc(u),
            );
            if *r == Role::Owner {
                b.push_str("the Account Owner");
            } else {
                let _ = write!(
                    b,
                    "<form method=\"post\" action=\"/members/{u}/role\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{c}\">{}\
                     <button type=\"submit\" class=\"change-role\">Change role</button></form> \
                     <form method=\"post\" action=\"/members/{u}/remove\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
                     <button type=\"submit\" class=\"danger remove\">Remove</button></form>",
                    role_select(*r),
                    u = esc(u),
                    c = esc(&me.csrf),
                );
            }
            b.push_str("</td></tr>");
        }
        b.push_str("</table>");
        let outside: Vec<_> = USERS
            .iter()
            .filter(|(u, _, _)| !members.iter().any(|(m, _)| m == u))
            .collect();
        if !outside.is_empty() {
            b.push_str("<h2>Not in the organization</h2><table><tr><th>user</th><th></th></tr>");
            for (u, n, _) in outside {
                let _ = write!(
                    b,
                    "<tr><td>{} <code>{u}</code></td><td><form method=\"post\" action=\"/members/{u}/add\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}<button type=\"submit\">Add</button></form></td></tr>",
                    esc(n),
                    esc(&me.csrf),
                    role_select(Role::User),
                );
            }
            b.push_str("</table>");
        }
        Ok::<_, Failure>(Html(layout("Members", Some(&me), &b)).into_response())
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

fn role_select(current: Role) -> String {
    let mut s = String::from("<select name=\"role\">");
    for r in [Role::Admin, Role::User, Role::Stakeholder] {
        let sel = if r == current { " selected" } else { "" };
        let _ = write!(
            s,
            "<option value=\"{}\"{sel}>{}</option>",
            r.as_str(),
            role_name(r)
        );
    }
    s.push_str("</select>");
    s
}

#[derive(serde::Deserialize)]
struct RoleForm {
    csrf: String,
    role: String,
}

/// A role the Members page may set: not the Owner (that is a transfer).
fn settable_role(s: &str) -> Result<Role, Failure> {
    match Role::from_str(s) {
        Ok(r) if r != Role::Owner => Ok(r),
        _ => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "Bad role",
            "Pick Admin, User or Stakeholder.",
        )),
    }
}

/// A user of this app (the path names one), or 404.
fn known_user(user: &str) -> Result<&'static str, Failure> {
    user_entry(user).map(|(u, _, _)| u).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "No such user",
            "This app has no such user.",
        )
    })
}

/// The checks every Members form passes first: the page is the Owner's,
/// the form is of this session, and the path names a user of this app.
fn members_form(me: &Me, csrf: &str, user: &str) -> Result<&'static str, Failure> {
    me.owner_only("Members")?;
    me.check(csrf)?;
    known_user(user)
}

/// A Members form that gives a user a role: the membership call that does
/// it, what the log says, and the `done` notice of the Members page after.
struct GiveRole {
    call: fn(&TokenStore, &str, &str, Role) -> tokenvault::Result<()>,
    what: &'static str,
    done: &'static str,
}

const CHANGE_ROLE: GiveRole = GiveRole {
    call: TokenStore::set_role,
    what: "role changed",
    done: "role",
};

const ADD_MEMBER: GiveRole = GiveRole {
    call: TokenStore::add_member,
    what: "member added",
    done: "added",
};

/// Gives `user` the form's role as `give` says, then goes back to the
/// Members page.
async fn give_role(app: App, me: Me, user: String, f: RoleForm, give: &GiveRole) -> Response {
    let GiveRole { call, what, done } = *give;
    let run = async {
        let user = members_form(&me, &f.csrf, &user)?;
        let role = settable_role(&f.role)?;
        blocking(&app.store, move |s| call(s, ORG, user, role)).await?;
        tracing::info!(by = me.user, user, %role, "{what}");
        Ok::<_, Failure>(Redirect::to(&format!("/members?done={done}")).into_response())
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

async fn change_role(
    State(app): State<App>,
    me: Me,
    Path(user): Path<String>,
    Form(f): Form<RoleForm>,
) -> Response {
    give_role(app, me, user, f, &CHANGE_ROLE).await
}

async fn remove_member(
    State(app): State<App>,
    me: Me,
    Path(user): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let run = async {
        let user = members_form(&me, &f.csrf, &user)?;
        let n = blocking(&app.store, move |s| s.remove_member(ORG, user)).await?;
        tracing::info!(by = me.user, user, revoked = n, "member removed");
        Ok::<_, Failure>(Redirect::to(&format!("/members?done=removed&n={n}")).into_response())
    };
    run.await.unwrap_or_else(|f| f.into_response())
}

async fn add_member(
    State(app): State<App>,
    me: Me,
    Path(user): Path<String>,
    Form(f): Form<RoleForm>,
) -> Response {
    give_role(app, me, user, f, &ADD_MEMBER).await
}

// ---------------------------------------------------------------------------
// The app's API, behind tokenvault's tower layer

async fn file_incident(Authorized(p): Authorized) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "data": {"incident": "filed", "by": &*p.user, "role": p.role.as_str(), "scope": USER_SCOPE}
    }))
}

async fn create_service(Authorized(p): Authorized) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "data": {"service": "created", "by": &*p.user, "role": p.role.as_str(), "scope": ADMIN_SCOPE}
    }))
}

// ---------------------------------------------------------------------------
// Pages and refusals

/// The app's own refusal page.
struct Failure {
    status: StatusCode,
    title: &'static str,
    message: String,
    logout: Option<String>,
}

impl Failure {
    fn new(status: StatusCode, title: &'static str, message: &str) -> Failure {
        Failure {
            status,
            title,
            message: message.to_string(),
            logout: None,
        }
    }
    fn internal() -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something failed",
            "The token store could not answer; the server log says why.",
        )
    }
    fn with_logout(mut self, csrf: &str) -> Failure {
        self.logout = Some(csrf.to_string());
        self
    }
}

impl From<Error> for Failure {
    /// tokenvault's messages never carry a secret, so a refusal shows its
    /// own; a storage failure is logged and shown as a plain 500.
    fn from(e: Error) -> Failure {
        let (status, title) = match e.kind() {
            "forbidden" | "insufficient_scope" => (StatusCode::FORBIDDEN, "403 — Not allowed"),
            "not_found" => (StatusCode::NOT_FOUND, "Not found"),
            "usage" | "malformed" => (StatusCode::BAD_REQUEST, "Bad input"),
            "conflict" => (StatusCode::CONFLICT, "Conflict"),
            "limit" => (StatusCode::TOO_MANY_REQUESTS, "Limit reached"),
            _ => {
                tracing::error!(kind = e.kind(), "store call failed: {e}");
                return Failure::internal();
            }
        };
        Failure::new(status, title, &e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut b = format!(
            "<div class=\"card refusal\" id=\"refusal\"><h1>{}</h1><p>{}</p><p><a href=\"/profile\">Back to My Profile</a></p>",
            esc(self.title),
            esc(&self.message)
        );
        if let Some(c) = &self.logout {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                esc(c)
            );
        }
        b.push_str("</div>");
        (self.status, Html(layout(self.title, None, &b))).into_response()
    }
}

async fn not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "404 — No such page",
        "There is no page here.",
    )
}

fn layout(title: &str, me: Option<&Me>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(me) = me {
        nav.push_str("<a href=\"/profile\" id=\"nav-profile\">My Profile</a>");
        if me.role == Role::Owner {
            nav.push_str(
                "<a href=\"/settings/api-tokens\" id=\"nav-settings\">Settings › API Tokens</a>\
                 <a href=\"/members\" id=\"nav-members\">Members</a>",
            );
        }
        let _ = write!(
            nav,
            "<span class=\"who\" id=\"who\">{} · {}</span><form method=\"post\" action=\"/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"logout\" type=\"submit\">Sign out</button></form>",
            esc(me.name),
            role_name(me.role),
            esc(&me.csrf)
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · {ORG_NAME}</title><style>{CSS}</style></head><body>\
         <header><span class=\"brand\">{ORG_NAME} <small>tokenvault demo</small></span><nav>{nav}</nav></header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}\
header{display:flex;align-items:center;gap:1.5em;background:#1d2f5c;color:#fff;padding:.7em 1.5em}\
header a{color:#dfe7ff;text-decoration:none;margin-right:1.2em}header nav{display:flex;align-items:center;flex:1}\
.brand{font-weight:600}.brand small{opacity:.7;font-weight:400}.who{margin-left:auto;margin-right:1em}\
main{max-width:1100px;margin:1.5em auto;padding:0 1.5em}\
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1.5em}\
th,td{border-bottom:1px solid #e3e6eb;padding:.45em .6em;text-align:left;font-size:.92em;vertical-align:middle}\
th{background:#eef0f4;font-weight:600}tr.state-revoked td,tr.state-expired td{color:#8a8f99}\
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:1em;margin:1em 0}\
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:end}.narrow{max-width:24em;display:grid;gap:.8em}\
label{display:grid;gap:.25em;font-size:.9em}input,select{padding:.4em;font:inherit}\
button{padding:.45em .9em;border:0;border-radius:4px;background:#2f5bd3;color:#fff;font:inherit;cursor:pointer}\
button.danger{background:#c23b3b}form.inline{display:inline-flex;gap:.4em;align-items:center;margin:0}\
.fresh{border-color:#2f9e5b;background:#f0fbf4}.secret{font-size:1.05em;word-break:break-all;user-select:all}\
.warn{color:#8a5a00}.notice{background:#eef4ff;padding:.6em;border-radius:4px}.error{color:#c23b3b}\
.refusal h1{color:#c23b3b}pre{background:#1d2330;color:#e8ecf3;padding:1em;border-radius:6px;overflow-x:auto}\
code{font-family:ui-monospace,monospace}";

fn revoke_button(action: &str, csrf: &str, t: &TokenInfo) -> String {
    if t.state != TokenState::Active {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" class=\"danger revoke\">Revoke</button></form>",
        esc(action),
        esc(csrf)
    )
}

fn label_of(t: &TokenInfo) -> String {
    t.label.as_deref().map_or("(no label)".into(), esc)
}

fn state_text(s: &TokenState) -> String {
    match s {
        TokenState::Revoked { at, by, .. } => {
            format!("revoked {} by {}", fmt_time(*at), esc(by))
        }
        other => other.as_str().to_string(),
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        Role::User => "User",
        Role::Stakeholder => "Stakeholder",
    }
}

/// HTML-escapes text for an element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
fn fmt_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date, counting in 400-year eras of
    // 146097 days that start on March 1st (so the leap day ends a year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
