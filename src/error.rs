//! The one error type of the crate.

/// Everything that can go wrong in a tokenvault call.
///
/// Each variant says in plain words what happened; [`Error::kind`] gives a
/// stable machine-readable name (used by the command-line tool's JSON output).
/// A call that returns an error has changed nothing, except where a variant
/// says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string is not a token of this store's format (wrong prefix or kind,
    /// bad length, characters outside base62, or a checksum that does not
    /// match). Rejected without touching the store.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The token is well formed but no live token has that id and secret.
    /// Unknown ids and wrong secrets are deliberately indistinguishable.
    #[error("the token is not valid")]
    InvalidToken,
    /// The token was valid but its lifetime is over.
    #[error("the token has expired")]
    Expired,
    /// The token (or the refresh token it derives from) has been revoked, or
    /// its holder is no longer a member of the organization.
    #[error("the token has been revoked")]
    Revoked,
    /// The acting member may not perform this call (see the policy table).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The token is valid but does not carry the scope asked for.
    #[error("the token does not grant the scope `{0}`")]
    InsufficientScope(String),
    /// The member, organization or token named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The call conflicts with the current state (a member that already
    /// exists, a second Owner, removing the Owner, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An argument is invalid (an empty id, an unknown scope or role, a scope
    /// outside what the member's role allows, a bad configuration value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configured limit was reached.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The store was opened with a key other than the one it was created with.
    #[error("the store key does not match the key this store was created with")]
    KeyMismatch,
    /// The key file may be read by users other than its owner (its mode
    /// gives group or others access): the store refuses a key others may
    /// know. The message names the fix (`chmod 600 PATH`). Kind
    /// `key_mismatch`.
    #[error("the key file is not private: {0}")]
    KeyFileExposed(String),
    /// Bytes read from disk could not be decoded, or the disk format is of an
    /// unknown version.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The storage engine or the file system failed.
    #[error("storage error: {0}")]
    Io(String),
}

impl Error {
    /// A stable, machine-readable name for the variant: one of `malformed`,
    /// `invalid_token`, `expired`, `revoked`, `forbidden`,
    /// `insufficient_scope`, `not_found`, `conflict`, `usage` (for
    /// [`Error::InvalidArgument`]), `limit`, `key_mismatch`, `corrupt`, `io`.
    ///
    /// ```
    /// assert_eq!(tokenvault::Error::InvalidToken.kind(), "invalid_token");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::InvalidToken => "invalid_token",
            Error::Expired => "expired",
            Error::Revoked => "revoked",
            Error::Forbidden(_) => "forbidden",
            Error::InsufficientScope(_) => "insufficient_scope",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::InvalidArgument(_) => "usage",
            Error::Limit(_) => "limit",
            Error::KeyMismatch | Error::KeyFileExposed(_) => "key_mismatch",
            Error::Corrupt(_) => "corrupt",
            Error::Io(_) => "io",
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        crate::storage::sled_files::io_error(&e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
