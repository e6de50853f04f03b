//! Checks of gRPC input before it reaches storage.

use crate::error::Error;

pub const TITLE_MAX: usize = 128;
pub const PAGE_MAX: u32 = 200;
pub const CATCH_UP_MAX: u32 = 1000;
/// Attachment ids one `ReferencedAttachments` call may ask about.
pub const ATTACHMENTS_ASKED_MAX: usize = 1000;
/// As the protocol bounds a `client_msg_id`.
pub const CLIENT_MSG_ID_MAX_CHARS: usize = 64;

pub fn uuid(field: &str, value: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.to_string())
        .map_err(|_| Error::InvalidArgument(format!("{field} must be a UUID")))
}

pub fn page_limit(limit: u32) -> Result<u32, Error> {
    if (1..=PAGE_MAX).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::InvalidArgument(format!("limit must be between 1 and {PAGE_MAX}")))
    }
}
