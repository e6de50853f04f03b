//! What a file is, from its first bytes alone: the name and the header a
//! client sends say what it claims, the bytes what it is. Only the types in
//! [`ALLOWED`] are kept, plus UTF-8 text; anything else is refused. HEIF
//! and AVIF photos are not among them: their metadata (GPS) could not be
//! stripped here.

/// How many bytes decide a file's type (or all of them, when it is smaller).
pub const SNIFF_BYTES: usize = 8192;

/// The content types a file may have, as `infer` names them.
const ALLOWED: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "audio/mpeg",
    "audio/ogg",
    "audio/x-wav",
    "audio/x-flac",
    "audio/aac",
    "audio/m4a",
    "audio/opus",
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "application/zip",
    "application/gzip",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/epub+zip",
];

/// The content type of a file that starts with `prefix` (at least
/// [`SNIFF_BYTES`] of it, or the whole file), or `None` when it is of no
/// allowed type.
pub fn content_type(prefix: &[u8]) -> Option<&'static str> {
    if let Some(found) = infer::get(prefix) {
        return ALLOWED.iter().find(|allowed| **allowed == found.mime_type()).copied();
    }
    is_text(prefix).then_some("text/plain; charset=utf-8")
}

/// UTF-8 without control characters other than tab, line feed, carriage
/// return and form feed. The prefix may end inside a character.
fn is_text(prefix: &[u8]) -> bool {
    let valid = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        // A character cut at the end of the prefix (at most 3 bytes of it).
        Err(e) if e.error_len().is_none() && prefix.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty() && !valid.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";

    #[test]
    fn images_and_documents_are_known_by_their_bytes() {
        assert_eq!(content_type(PNG), Some("image/png"));
        assert_eq!(content_type(PDF), Some("application/pdf"));
        assert_eq!(content_type(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), Some("image/jpeg"));
    }

    #[test]
    fn utf8_text_is_text_even_cut_inside_a_character() {
        assert_eq!(content_type("shopping list: äpfel\n".as_bytes()), Some("text/plain; charset=utf-8"));
        let cut = &"€".as_bytes()[..2];
        assert_eq!(content_type(&[b"price: ".as_slice(), cut].concat()), Some("text/plain; charset=utf-8"));
    }

    #[test]
    fn executables_markup_and_binary_noise_are_refused() {
        assert_eq!(content_type(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff"), None, "a Windows executable");
        assert_eq!(content_type(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"), None, "an ELF executable");
        assert_eq!(content_type(b"\0\x01\x02\x03\xfe\xff"), None, "bytes of no type");
        assert_eq!(content_type(b"text with a NUL\0 inside"), None);
        assert_eq!(content_type(b""), None, "nothing");
        // HTML or SVG would be text, but the API must never serve markup: see
        // the gateway's download headers (a sandboxing CSP and `nosniff`).
        assert_eq!(content_type(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), Some("text/plain; charset=utf-8"));
    }
}
