//! The command line grammar (clap derive).
//!
//! To add a command, add a variant to [`Command`] and a match arm in
//! `commands::on_store`; it then runs through the admin socket too (the
//! socket carries the command line, not a list of commands). A command
//! that must run in its own process, as `init`, `demo` and `serve` do,
//! goes in [`Command::local_only`].
#![allow(missing_docs)]

use std::path::PathBuf;

use crate::{Actor, Role, TokenId};
use clap::{ArgGroup, Args, Parser, Subcommand};

use super::parse;

/// Operate a tokenvault store: members, refresh and access tokens,
/// revocation, audit, purge and integrity.
#[derive(Debug, Parser)]
#[command(name = "tokenvault", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 refused or failed, 2 bad usage.\n\
A TOKEN given as `-` is read from standard input."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after its name.
#[derive(Debug, Args)]
pub struct Global {
    /// The store's directory (its key file is PATH.key beside it).
    #[arg(
        long,
        global = true,
        env = "TOKENVAULT_DB",
        default_value = "./tokenvault.db",
        value_name = "PATH"
    )]
    pub db: PathBuf,
    /// Print exactly one JSON document on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Accept a key file that group or others may read (refused by default,
    /// as ssh refuses such a private key: `chmod 600 PATH.key` is the fix).
    #[arg(
        long,
        global = true,
        env = "TOKENVAULT_ALLOW_LOOSE_KEY_PERMISSIONS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_loose_key_permissions: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store and its key file (mode 0600).
    Init,
    /// Keep the organization's membership (as the host service does).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Refresh tokens: generate, assign, list, show, label, rotate,
    /// disable, enable, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Organization settings: the token policy (Owner only).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Trade a refresh token for an access token and print the grant.
    Exchange {
        /// The refresh token, or `-` to read it from standard input.
        #[arg(value_name = "REFRESH_TOKEN")]
        token: String,
    },
    /// Check an access token and print whom it speaks for.
    Verify {
        /// The access token, or `-` to read it from standard input.
        #[arg(value_name = "ACCESS_TOKEN")]
        token: String,
        /// Also require this scope.
        #[arg(long, value_name = "S")]
        scope: Option<String>,
    },
    /// The organization's audit trail, newest first (Owner only).
    Audit {
        /// The acting Owner.
        #[arg(long = "as", value_name = "ORG/OWNER", value_parser = parse::actor)]
        actor: Actor,
        /// How many events to show (default 50); given, the JSON also has
        /// `next`, the cursor of the next page (null at the end).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Only events older than this one (a `seq`, as `next` gives).
        #[arg(long, value_name = "CURSOR")]
        after: Option<u64>,
    },
    /// Remove expired access tokens and old revoked or expired refresh
    /// tokens, in batches (a progress bar when standard error is a terminal).
    Purge {
        /// Records removed per batch.
        #[arg(long, value_name = "N", default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
    /// Check every record and index; exit 1 if anything is wrong.
    Check,
    /// Counts of members, tokens by state, and size on disk.
    Stats,
    /// Play the seed story on a temporary store and narrate each step.
    Demo,
    /// Serve the HTTP front (Squadcast's token endpoints) on ADDR until
    /// Ctrl-C or SIGTERM, logging one line per request to standard error;
    /// its OpenAPI 3.1 document is served at GET /openapi.json.
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Exchanges a minute allowed per refresh token (0: no limit).
        #[arg(long, value_name = "N", default_value_t = 60)]
        rate_per_minute: u32,
        /// Exchanges allowed back to back per refresh token.
        #[arg(long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..))]
        rate_burst: u32,
        /// Connections served at once; one more is answered 503 with
        /// Retry-After.
        #[arg(long, value_name = "N", default_value_t = 1024,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_connections: u64,
        /// Connections served at once for one peer address (an IPv6 /64
        /// counts as one; default: an eighth of --max-connections). Behind a
        /// reverse proxy, set it to --max-connections.
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        max_connections_per_peer: Option<u64>,
        /// Time a new connection has to send its first request head (e.g.
        /// 5s or 3; never more than the 10 s each later head has).
        #[arg(long, value_name = "DURATION", default_value = "5s",
              value_parser = parse::duration)]
        first_request_timeout: u64,
        /// Also serve Prometheus metrics at GET /metrics on ADDR, a listener
        /// of its own (keep it off the public network).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Log format on standard error: text, or json (one object a line:
        /// time, level, target, message and the event's fields).
        #[arg(long, value_name = "FORMAT", default_value = "text",
              value_parser = ["text", "json"])]
        log_format: String,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key);
        /// SIGHUP reloads both files for new connections.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Do not offer the admin socket (DB/admin.sock) through which the
        /// command line reaches the store while `serve` holds it.
        #[arg(long)]
        no_admin_socket: bool,
    },
}

impl Command {
    /// The name of a command that runs only in a process of its own (it
    /// creates a store, makes a temporary one, or holds one), never
    /// through the admin socket.
    pub fn local_only(&self) -> Option<&'static str> {
        match self {
            Command::Init => Some("init"),
            Command::Demo => Some("demo"),
            Command::Serve { .. } => Some("serve"),
            _ => None,
        }
    }
}

/// Parses a command line sent to the admin socket (without the program
/// name): the grammar of the binary, except that no option is read from
/// this process's environment (`TOKENVAULT_DB` and the like are the
/// client's business; the store is the one this process holds).
pub fn parse_remote(args: &[String]) -> Result<(Cli, Vec<String>), clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let grammar = Cli::command().mut_args(|a| a.env(None::<&str>));
    let argv = std::iter::once("tokenvault".to_string()).chain(args.iter().cloned());
    let matches = grammar.try_get_matches_from(argv)?;
    let mut words = Vec::new();
    let mut m = &matches;
    while let Some((name, sub)) = m.subcommand() {
        words.push(name.to_string());
        m = sub;
    }
    Ok((Cli::from_arg_matches(&matches)?, words))
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member with ROLE (owner, admin, user or stakeholder).
    Add {
        org: String,
        user: String,
        #[arg(value_parser = parse::role)]
        role: Role,
    },
    /// Change a member's role (the Owner changes only by `transfer`).
    Role {
        org: String,
        user: String,
        #[arg(value_parser = parse::role)]
        role: Role,
    },
    /// Remove a member and revoke all their tokens.
    Remove { org: String, user: String },
    /// Make NEW_OWNER the Owner; the previous Owner becomes an Admin.
    Transfer { org: String, new_owner: String },
    /// The members of ORG and their roles.
    List { org: String },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Print the organization's token policy; with options, change it
    /// first (audited).
    Policy {
        #[arg(long = "as", value_name = "ORG/OWNER", value_parser = parse::actor)]
        actor: Actor,
        /// The longest a token may live (a duration as --expires-in), or
        /// `none`.
        #[arg(long, value_name = "DURATION|none", value_parser = parse::limit)]
        max_lifetime: Option<parse::Limit>,
        /// Expire tokens not exchanged for this long, or `none`.
        #[arg(long, value_name = "DURATION|none", value_parser = parse::limit)]
        unused_expiry: Option<parse::Limit>,
        /// Rotate refresh tokens on use: each OAuth refresh (`POST
        /// /oauth/token`) returns a new refresh token, and presenting a
        /// spent one again revokes its whole family.
        #[arg(long, value_name = "true|false", value_parser = clap::value_parser!(bool))]
        rotate_on_use: Option<bool>,
    },
}

/// `--label`, `--scopes`, `--expires-in` of `generate` and `assign`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// A label shown in lists.
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
    /// Narrow the token to these scopes (comma separated).
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Expiry: 30d, 12h, 90m, 3600s, or plain seconds (default: never).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generate the actor's own refresh token (printed once).
    Generate {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// The Owner assigns a refresh token to another member (printed once).
    Assign {
        #[arg(long = "as", value_name = "ORG/OWNER", value_parser = parse::actor)]
        actor: Actor,
        /// The member who receives the token.
        #[arg(long, value_name = "USER")]
        to: String,
        #[command(flatten)]
        issue: IssueArgs,
        /// Show no secret: the token waits (state `pending`) for the member
        /// to claim it with `token claim` (within 7 days).
        #[arg(long)]
        pending: bool,
    },
    /// Claim a token the Owner assigned to the actor pending (printed once).
    Claim {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
    },
    /// The actor's own tokens; with --all every token of the org (Owner only).
    List {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// Every token of the organization.
        #[arg(long)]
        all: bool,
        /// Only tokens after this one in the list (a token id, as `next`
        /// gives).
        #[arg(long, value_name = "CURSOR", value_parser = token_id)]
        after: Option<TokenId>,
        /// At most N tokens; the JSON then also has `next`, the cursor of
        /// the next page (null at the end).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// One token by id (its holder or the Owner).
    Show {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
    },
    /// Change a token's label (its holder or the Owner).
    Label {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
        /// The new label (at most 256 bytes, no control characters).
        #[arg(value_name = "LABEL")]
        label: String,
    },
    /// Rotate a token (its holder or the Owner): a new token with the same
    /// user, scopes, label and expiry; the old one keeps working for the
    /// grace period (never past its own expiry), then expires.
    Rotate {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
        /// How long the old token keeps working: 0 (at once), plain
        /// seconds, or units as --expires-in (default 24h, at most 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse::grace)]
        grace: Option<u64>,
    },
    /// Suspend a token (its holder or the Owner): neither it nor its
    /// access tokens work until it is enabled.
    Disable {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
    },
    /// Restore a suspended token (its holder or the Owner), unless it was
    /// revoked or expired meanwhile.
    Enable {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
    },
    /// Revoke a refresh token and every access token derived from it.
    Revoke {
        #[arg(long = "as", value_name = "ORG/USER", value_parser = parse::actor)]
        actor: Actor,
        /// The token's id (32 hex digits, as `token list` shows).
        #[arg(value_name = "ID", value_parser = token_id)]
        id: TokenId,
        /// Why (kept in the token's record).
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },
    /// Revoke every token of a member or of the organization.
    #[command(group(ArgGroup::new("target").required(true).args(["user", "org"])))]
    RevokeAll {
        #[arg(long = "as", value_name = "ORG/OWNER", value_parser = parse::actor)]
        actor: Actor,
        /// Every token of this member.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Every token of the organization.
        #[arg(long)]
        org: bool,
        /// Only tokens issued before TIME (now, Unix seconds, or RFC 3339);
        /// the cutoff is kept, so verification checks it too.
        #[arg(long, value_name = "TIME", value_parser = parse::time)]
        before: Option<u64>,
    },
}

fn token_id(s: &str) -> Result<TokenId, String> {
    if parse::looks_like_token(s) {
        // Its text is a secret: not repeated.
        return Err(
            "this is a token, not a token id; pass its id (32 hexadecimal \
                    digits, as `token list` shows)"
                .into(),
        );
    }
    s.parse::<TokenId>()
        .map_err(|_| format!("`{s}` is not a token id (32 hexadecimal digits)"))
}
