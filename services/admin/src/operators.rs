//! Who may call: operators, each named, each known by the SHA-256 of their
//! token (`ADMIN_OPERATORS`). A call carries `authorization: Bearer <token>`;
//! the interceptor finds its operator, compares digests in constant time,
//! and hands the name on to the handlers (for the audit log). A user's access
//! token is not an operator token and is refused like any other.

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The operator a call was made by.
#[derive(Debug, Clone)]
pub struct Operator(pub String);

#[derive(Debug, Clone, Default)]
pub struct Operators(Vec<(String, [u8; 32])>);

impl Operators {
    /// Parses `name:sha256hex,...`; names are 1 to 64 characters of
    /// `a-z A-Z 0-9 _ . -`, each once.
    ///
    /// # Errors
    /// Says what is wrong with the list.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut operators: Vec<(String, [u8; 32])> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, digest) = entry.split_once(':').ok_or("each entry is name:sha256hex")?;
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid_name {
                return Err(format!("operator name {name:?} must be 1 to 64 of a-z A-Z 0-9 _ . -"));
            }
            let digest: [u8; 32] = hex::decode(digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("the token digest of {name} must be 64 hex digits (a SHA-256)"))?;
            if operators.iter().any(|(n, _)| n == name) {
                return Err(format!("operator {name} is listed twice"));
            }
            operators.push((name.to_owned(), digest));
        }
        Ok(Self(operators))
    }

    /// One operator with `token` (tests and tools use this).
    pub fn with_token(name: &str, token: &str) -> Self {
        Self(vec![(name.to_owned(), Sha256::digest(token.as_bytes()).into())])
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// The operator whose token this is.
    fn find(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, each byte of each: the time says nothing.
        let mut found = None;
        for (name, expected) in &self.0 {
            let differs = expected.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differs == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The gRPC interceptor: lets a call through with its [`Operator`], or
    /// refuses it with `UNAUTHENTICATED` and a reason.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a call without a known operator token.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let refuse = |why: &str| {
            crate::metrics::count("unauthenticated");
            tracing::warn!(why, "an admin call was refused");
            Err(Status::unauthenticated(why.to_owned()))
        };
        if self.0.is_empty() {
            return refuse("no operators are configured (ADMIN_OPERATORS); every call is refused");
        }
        let Some(header) = request.metadata().get("authorization") else {
            return refuse("operator credentials required: authorization: Bearer <operator token>");
        };
        let token = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default();
        match self.find(token.trim()) {
            Some(name) => {
                let operator = Operator(name.to_owned());
                request.extensions_mut().insert(operator);
                Ok(request)
            }
            None => refuse("unknown operator credentials"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_a_known_operator_token_gets_through_with_its_name() {
        let operators = Operators::with_token("ops", "s3cret-token");
        let passed = operators.check(call(Some("Bearer s3cret-token"))).unwrap();
        assert_eq!(passed.extensions().get::<Operator>().unwrap().0, "ops");
        for refused in [None, Some("Bearer wrong"), Some("s3cret-token"), Some("Bearer "), Some("Basic s3cret-token")] {
            let status = operators.check(call(refused)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{refused:?}");
        }
        let status = Operators::default().check(call(Some("Bearer s3cret-token"))).unwrap_err();
        assert!(status.message().contains("ADMIN_OPERATORS"), "{status:?}");
    }
}
