//! The one error type of the crate.

/// Everything that can go wrong in a tokenvault call.
///
/// Each variant says in plain words what happened; [`Error::kind`] gives a
/// stable machine-readable name (used by the command-line tool's JSON output).
/// A call that returns an error has changed nothing, except where a variant
/// says otherwise: a call answered [`Error::Io`] because its write or sync
/// failed may have taken effect (see there).
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
    /// The refresh token (or the one an access token derives from) is
    /// suspended (`disable`) until its holder or the Owner enables it
    /// again. Said only after the secret matched. Kind `disabled`.
    #[error("the token is disabled")]
    Disabled,
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
    /// The storage engine or the file system failed. The [`IoError`] holds
    /// the message and, where there is one, the underlying error (a
    /// [`std::io::Error`], a sled error, a PostgreSQL error), reachable through
    /// [`std::error::Error::source`].
    ///
    /// When a durable call's own write or sync failed, what it changed may
    /// still take effect (a disk may keep a write whose sync reported an
    /// error): a revocation, demotion or member removal answered `Io` may be
    /// in force once the store answers again, and retrying it is safe (it
    /// is idempotent). An issue (`generate`, `assign`) answered `Io` never
    /// leaves a token: it is taken out at once and removed from the disk
    /// at the next open if the disk kept it.
    #[error("storage error: {0}")]
    Io(#[source] IoError),
    /// The service cannot answer right now but may later: a shared
    /// (PostgreSQL) store's replica whose view is stale (no successful sync
    /// within the staleness bound) fails closed with this rather than answer
    /// from stale memory; a store on disk refuses calls with this while it
    /// opens its storage again after an I/O error (or cannot yet). The call
    /// changed nothing; retrying shortly succeeds once the storage answers.
    /// Kind `unavailable` (HTTP 503 with `Retry-After`).
    #[error("the service is temporarily unavailable: {0}")]
    Unavailable(String),
}

/// The details of an [`Error::Io`]: a message for people and, where there is
/// one, the error that caused it.
///
/// It displays as the message alone, dereferences to it (so `m.contains(..)`
/// works on it as on a string), and gives the cause through
/// [`std::error::Error::source`].
///
/// ```
/// use std::error::Error as _;
/// use tokenvault::IoError;
///
/// let cause = std::io::Error::other("the device is gone");
/// let e = IoError::with_source("cannot read the store: the device is gone", cause);
/// assert_eq!(e.to_string(), "cannot read the store: the device is gone");
/// assert!(e.contains("device"));
/// let cause = e.source().and_then(|c| c.downcast_ref::<std::io::Error>());
/// assert_eq!(cause.map(|c| c.kind()), Some(std::io::ErrorKind::Other));
///
/// // Wrapped in the crate's error, the chain still reaches the cause.
/// let e = tokenvault::Error::Io(e);
/// assert_eq!(e.kind(), "io");
/// assert_eq!(e.to_string(), "storage error: cannot read the store: the device is gone");
/// assert!(e.source().and_then(|s| s.source()).is_some());
///
/// // A message without a cause.
/// let e = IoError::from("the storage failed");
/// assert!(e.source().is_none());
/// ```
pub struct IoError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl IoError {
    /// An error with this message, caused by `cause` (returned by
    /// [`std::error::Error::source`]). The message is shown as is: include
    /// the cause's text in it where people should read it.
    pub fn with_source(
        message: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        IoError {
            message: message.into(),
            source: Some(cause.into()),
        }
    }

    /// The message (the same text as [`Display`](std::fmt::Display) shows).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, to reword it while keeping the cause.
    pub(crate) fn message_mut(&mut self) -> &mut String {
        &mut self.message
    }
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The message and whether there is a cause, nothing more: the cause's own
/// `Debug` is not shown (its text is already in the message).
impl std::fmt::Debug for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoError")
            .field("message", &self.message)
            .field("has_source", &self.source.is_some())
            .finish()
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl std::ops::Deref for IoError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl From<String> for IoError {
    fn from(message: String) -> Self {
        IoError {
            message,
            source: None,
        }
    }
}

impl From<&str> for IoError {
    fn from(message: &str) -> Self {
        IoError::from(message.to_string())
    }
}

impl Error {
    /// A stable, machine-readable name for the variant: one of `malformed`,
    /// `invalid_token`, `expired`, `revoked`, `forbidden`,
    /// `insufficient_scope`, `not_found`, `conflict`, `usage` (for
    /// [`Error::InvalidArgument`]), `limit`, `key_mismatch`, `corrupt`, `io`,
    /// `unavailable`.
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
            Error::Disabled => "disabled",
            Error::Forbidden(_) => "forbidden",
            Error::InsufficientScope(_) => "insufficient_scope",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::InvalidArgument(_) => "usage",
            Error::Limit(_) => "limit",
            Error::KeyMismatch | Error::KeyFileExposed(_) => "key_mismatch",
            Error::Corrupt(_) => "corrupt",
            Error::Io(_) => "io",
            Error::Unavailable(_) => "unavailable",
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        io_error(e)
    }
}

/// Whether an I/O error says the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    if matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        return true;
    }
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return true;
    }
    false
}

/// The error for an I/O error: kind `io`, and, for a full disk, a message
/// that says so first.
/// The [`std::io::Error`] is kept as the error's source.
pub(crate) fn io_error(e: std::io::Error) -> Error {
    let message = if is_disk_full(&e) {
        format!("the disk is full (free some space; the store writes again without a restart): {e}")
    } else {
        e.to_string()
    };
    Error::Io(IoError::with_source(message, e))
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::error::Error as _;

    /// The first error in `e`'s source chain (after `e` itself) of type `T`.
    pub(crate) fn cause<T: std::error::Error + 'static>(e: &Error) -> Option<&T> {
        let mut next = e.source();
        while let Some(s) = next {
            if let Some(t) = s.downcast_ref::<T>() {
                return Some(t);
            }
            next = s.source();
        }
        None
    }

    #[test]
    fn an_io_error_keeps_its_std_io_cause() {
        let e = Error::from(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "no access",
        ));
        assert_eq!(e.kind(), "io");
        assert_eq!(e.to_string(), "storage error: no access");
        let io = cause::<std::io::Error>(&e).expect("an io::Error in the chain");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(matches!(&e, Error::Io(m) if m.contains("access")));
    }

    #[test]
    fn a_message_has_no_cause_and_debug_shows_only_the_message() {
        let e = Error::Io("the storage failed".into());
        assert!(e.source().is_some_and(|s| s.source().is_none()));
        assert_eq!(
            format!("{e:?}"),
            r#"Io(IoError { message: "the storage failed", has_source: false })"#
        );
    }

    #[test]
    fn unavailable_is_its_own_kind() {
        let e = Error::Unavailable("the replica is stale".into());
        assert_eq!(e.kind(), "unavailable");
        assert_eq!(
            e.to_string(),
            "the service is temporarily unavailable: the replica is stale"
        );
    }
}
