//! A demo of the HTTP front: seeds a temporary store with the org `acme`
//! (olivia the Owner, adam an Admin, uma a User), prints olivia's refresh
//! token, and serves Squadcast's token endpoints until Ctrl-C.
//!
//! ```text
//! cargo run --features http --example http_server -- 127.0.0.1:8080
//! ```

use tokenvault::{Actor, GenerateOptions, Role, TokenStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string())
        .parse()?;
    let store = TokenStore::temporary()?;
    store.add_member("acme", "olivia", Role::Owner)?;
    store.add_member("acme", "adam", Role::Admin)?;
    store.add_member("acme", "uma", Role::User)?;
    let issued = store.generate(
        &Actor::new("acme", "olivia"),
        GenerateOptions::default().label("profile page"),
    )?;
    println!("olivia's refresh token: {}", issued.token.expose());
    println!("serving on http://{addr} (Ctrl-C to stop)");
    tokenvault::http::serve(store, addr).await?;
    Ok(())
}
