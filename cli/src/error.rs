//! Everything that can end a command early, each as the one line the user
//! reads on stderr (after `chat: `) and the exit code a script tests: 2 when
//! the command line itself is wrong, 1 for everything else (the server said
//! no, the network failed, a local file could not be used).
//!
//! No variant ever carries a token or a password: the messages are built from
//! the server's error body (or the admin service's gRPC status), a URL
//! without credentials, or a path.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong; nothing was sent anywhere.
    #[error("{0}; see `chat help`")]
    Usage(String),
    /// The server's error body, `{"error": {"code", "message"}}`, as it came.
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// No answer: refused, reset, timed out, no such host.
    #[error("cannot reach {server}: {cause}")]
    Unreachable { server: String, cause: String },
    /// No stored credentials, or the server no longer takes them (the
    /// refresh token was refused too).
    #[error("not logged in; run `chat login`")]
    NotLoggedIn,
    /// The server answered something protocol v1 does not describe.
    #[error("unexpected answer from {server}: {what}")]
    Unexpected { server: String, what: String },
    /// The admin service said no: its gRPC code in snake_case
    /// (`not_found`, `unauthenticated`) and its message.
    #[error("admin: {code}: {message}")]
    Admin { code: &'static str, message: String },
    /// The admin service did not answer.
    #[error("cannot reach the admin service at {url}: {cause}")]
    AdminUnreachable { url: String, cause: String },
    /// The WebSocket was closed by the server.
    #[error("the server closed the connection ({code}{reason})")]
    Closed { code: u16, reason: String },
    /// A file in the config directory, or the terminal, failed us.
    #[error("{0}")]
    Local(String),
    /// Standard output was closed (`chat history … | head`): nothing more
    /// to say, and nothing wrong.
    #[error("standard output closed")]
    OutputClosed,
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn local(message: impl Into<String>) -> Self {
        Self::Local(message.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::OutputClosed => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        }
    }

    /// Whether the user should be told (a closed stdout is not news).
    pub fn is_reported(&self) -> bool {
        !matches!(self, Self::OutputClosed)
    }
}

/// A lower-case cause for an I/O failure, as people say it ("connection
/// refused"), else the error's own words without the `(os error N)` tail.
pub fn io_cause(error: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let said = match error.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        TimedOut => "timed out",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        AddrNotAvailable => "address not available",
        PermissionDenied => "permission denied",
        NotFound => "not found",
        _ => "",
    };
    if !said.is_empty() {
        return said.to_owned();
    }
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The most telling cause in an error's chain: the I/O error at its root
/// when there is one, else the innermost message.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_cause(io);
        }
        innermost = e;
        current = e.source();
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_read_as_people_say_them() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_cause(&refused), "connection refused");
        let other = std::io::Error::from_raw_os_error(9999);
        assert!(!io_cause(&other).contains("os error"), "{}", io_cause(&other));
    }

    #[test]
    fn usage_errors_exit_2_and_everything_else_1() {
        assert_eq!(Error::usage("x").exit_code(), ExitCode::from(2));
        assert_eq!(Error::NotLoggedIn.exit_code(), ExitCode::from(1));
        let server = Error::Server { code: "not_found".into(), message: "no user with id 1".into() };
        assert_eq!(server.to_string(), "not_found: no user with id 1");
        let admin = Error::Admin { code: "unauthenticated", message: "unknown operator credentials".into() };
        assert_eq!(
            (admin.to_string().as_str(), admin.exit_code()),
            ("admin: unauthenticated: unknown operator credentials", ExitCode::from(1))
        );
    }
}
