//! The client of an exchange as the store records it for the token's last
//! use ([`crate::ClientInfo`]): the peer's address from the connection (as
//! [`super::serve_on`] sees it; none when the router is served otherwise)
//! and the `User-Agent` header. No forwarding header (`X-Forwarded-For`,
//! `Forwarded`) is believed: nothing here says which proxy to trust.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap};

use crate::ClientInfo;

/// The peer's address, if the server that runs the router knows it.
pub(super) struct Peer(pub(super) Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(peer_of(&parts.extensions)))
    }
}

/// The peer's address among a request's extensions.
pub(super) fn peer_of(ext: &Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// The client of a request: the peer's address (an IPv4 address mapped
/// into IPv6 shown as IPv4) and the first `User-Agent`, cleaned and bounded
/// by [`ClientInfo::new`].
pub(super) fn client_of(headers: &HeaderMap, peer: Option<SocketAddr>) -> ClientInfo {
    let agent = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    ClientInfo::new(peer.map(|p| p.ip().to_canonical()), agent.as_deref())
}
