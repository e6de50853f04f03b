//! What media does to an image before keeping it: checks its size in pixels
//! from its header before decoding anything (a decompression bomb is refused,
//! not decoded), decodes it within a memory bound, turns it upright, strips
//! its metadata (EXIF with GPS, XMP, IPTC, text chunks) without re-encoding
//! when it can, and makes a small thumbnail and a blurred placeholder
//! (<https://blurha.sh>). JPEG, PNG, GIF and WebP; the caller keeps the
//! original and the thumbnail.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// The content types handled here (the others are kept as files).
pub const TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
/// Largest side of a thumbnail, in pixels.
const THUMBNAIL_SIDE: u32 = 320;
/// What a decoder may allocate for one image (the decoded pixels included).
const DECODE_MEMORY: u64 = 256 * 1024 * 1024;

/// An image as it is kept.
pub struct Processed {
    /// The image without its metadata (re-encoded only when it had to be turned).
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub thumbnail: Vec<u8>,
    pub thumbnail_type: &'static str,
    pub blurhash: String,
}

/// Why an image is refused; the message is for the uploader.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Processes the image `bytes` of `content_type` (one of [`TYPES`]), of at
/// most `max_pixels`. CPU-bound: run it on a blocking thread.
///
/// # Errors
/// [`Refused`] for an image too large in pixels, or one that does not decode.
pub fn process(content_type: &str, bytes: Vec<u8>, max_pixels: u64) -> Result<Processed, Refused> {
    let format = match content_type {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        _ => ImageFormat::WebP,
    };
    let damaged = |e: image::ImageError| Refused(format!("the image cannot be read: {e}"));
    let mut reader = ImageReader::with_format(Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(DECODE_MEMORY);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(damaged)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(Refused(format!("the image is {width}×{height}, more than {max_pixels} pixels")));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(damaged)?;
    let upright = orientation == image::metadata::Orientation::NoTransforms;
    image.apply_orientation(orientation);

    let bytes = if upright {
        strip_metadata(format, &bytes).ok_or_else(|| Refused("the image's structure is damaged".into()))?
    } else {
        // Turning it means new pixels: encoded again, without metadata.
        encode(&image, format == ImageFormat::Jpeg).map_err(damaged)?
    };
    let thumbnail = image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let opaque = !thumbnail.color().has_alpha();
    let thumbnail_type = if opaque { "image/jpeg" } else { "image/png" };
    let blurhash = placeholder(&thumbnail);
    Ok(Processed {
        bytes,
        width: image.width(),
        height: image.height(),
        thumbnail: encode(&thumbnail, opaque).map_err(damaged)?,
        thumbnail_type,
        blurhash,
    })
}

/// A JPEG (quality 85) of an opaque image, else a PNG.
fn encode(image: &DynamicImage, as_jpeg: bool) -> image::ImageResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    if as_jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        image.to_rgb8().write_with_encoder(encoder)?;
    } else {
        image.write_to(&mut out, ImageFormat::Png)?;
    }
    Ok(out.into_inner())
}

/// A blurhash of 4×3 components, from the thumbnail scaled down further.
fn placeholder(thumbnail: &DynamicImage) -> String {
    let small = thumbnail.thumbnail(32, 32).to_rgba8();
    blurhash::encode(4, 3, small.width(), small.height(), small.as_raw()).unwrap_or_default()
}

/// The image without its metadata, byte for byte otherwise; `None` when its
/// structure is damaged.
fn strip_metadata(format: ImageFormat, bytes: &[u8]) -> Option<Vec<u8>> {
    match format {
        ImageFormat::Jpeg => strip_jpeg(bytes),
        ImageFormat::Png => strip_png(bytes),
        ImageFormat::WebP => strip_webp(bytes),
        // GIF has no EXIF; its comments and application blocks stay.
        _ => Some(bytes.to_vec()),
    }
}

/// Drops APP1 (EXIF, XMP), APP13 (IPTC) and comment segments before the
/// image data; ICC profiles (APP2) and everything else stay.
fn strip_jpeg(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..2]);
    let mut at = 2;
    loop {
        if bytes.get(at)? != &0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            // Fill bytes before a marker.
            0xFF => {
                at += 1;
                continue;
            }
            // Start of scan: the image data, then the end, as they are.
            0xDA => {
                out.extend_from_slice(&bytes[at..]);
                return Some(out);
            }
            0xD8 | 0xD9 | 0x01 | 0xD0..=0xD7 => return None,
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]));
        let end = at.checked_add(2)?.checked_add(length)?;
        if length < 2 || end > bytes.len() {
            return None;
        }
        if !matches!(marker, 0xE1 | 0xED | 0xFE) {
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
    }
}

/// Drops the chunks that carry metadata: eXIf, tEXt, zTXt, iTXt, tIME.
fn strip_png(bytes: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(SIGNATURE);
    let mut at = SIGNATURE.len();
    while at < bytes.len() {
        let length = usize::try_from(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?)).ok()?;
        let kind = bytes.get(at + 4..at + 8)?;
        let end = at.checked_add(12)?.checked_add(length)?;
        if end > bytes.len() {
            return None;
        }
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

/// Drops the EXIF and XMP chunks of a RIFF WebP, clears their flags in its
/// VP8X header and sets the RIFF size again.
fn strip_webp(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..12]);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let kind = &bytes[at..at + 4];
        let length = usize::try_from(u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?)).ok()?;
        let end = at.checked_add(8)?.checked_add(length)?.checked_add(length % 2)?;
        if end > bytes.len() {
            return None;
        }
        match kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" if length >= 1 => {
                let start = out.len();
                out.extend_from_slice(&bytes[at..end]);
                // Flags: bit 3 EXIF, bit 2 XMP.
                out[start + 8] &= !0b0000_1100;
            }
            _ => out.extend_from_slice(&bytes[at..end]),
        }
        at = end;
    }
    let size = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A JPEG with an APP1 EXIF segment (a GPS tag's worth of bytes) after SOI.
    fn jpeg_with_exif() -> Vec<u8> {
        let plain = photo(ImageFormat::Jpeg, 64, 48);
        let exif = b"Exif\0\0GPS 52.5163 N 13.3777 E";
        let length = u16::try_from(exif.len() + 2).unwrap().to_be_bytes();
        [&plain[..2], &[0xFF, 0xE1], &length, exif, &plain[2..]].concat()
    }

    #[test]
    fn a_jpeg_loses_its_exif_and_keeps_its_pixels_byte_for_byte() {
        let with_exif = jpeg_with_exif();
        let processed = process("image/jpeg", with_exif.clone(), 1_000_000).unwrap();
        assert!(!processed.bytes.windows(4).any(|w| w == b"Exif"), "no EXIF left");
        assert!(!processed.bytes.windows(3).any(|w| w == b"GPS"), "no GPS left");
        assert_eq!(processed.bytes, photo(ImageFormat::Jpeg, 64, 48), "only the segment went");
        assert_eq!((processed.width, processed.height), (64, 48));
        assert_eq!(processed.thumbnail_type, "image/jpeg");
        assert!(!processed.blurhash.is_empty());
    }

    #[test]
    fn a_png_loses_its_text_chunks_and_gets_a_thumbnail_no_larger_than_320() {
        let plain = photo(ImageFormat::Png, 1000, 500);
        // A tEXt chunk after IHDR (8 + 25 bytes in); its CRC is not checked by the stripper.
        let text = [&9u32.to_be_bytes()[..], b"tEXt", b"GPS\0 1 2 ", &[0, 0, 0, 0]].concat();
        let with_text = [&plain[..33], &text, &plain[33..]].concat();
        let processed = process("image/png", with_text, 1_000_000).unwrap();
        assert_eq!(processed.bytes, plain);
        let thumbnail = image::load_from_memory(&processed.thumbnail).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (320, 160));
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A valid PNG claiming 100,000 × 100,000 pixels: 40 GB decoded, from
        // a few dozen bytes.
        let chunk = |kind: &[u8], data: &[u8]| {
            let body = [kind, data].concat();
            let length = u32::try_from(data.len()).unwrap().to_be_bytes();
            [&length[..], &body, &crc32(&body).to_be_bytes()].concat()
        };
        let ihdr = [&100_000u32.to_be_bytes()[..], &100_000u32.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
        let idat = [0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x01, 0x00, 0x01];
        let bomb =
            [&b"\x89PNG\r\n\x1a\n"[..], &chunk(b"IHDR", &ihdr), &chunk(b"IDAT", &idat), &chunk(b"IEND", &[])].concat();
        let refused = process("image/png", bomb, 40_000_000).err().expect("refused");
        assert!(refused.0.contains("100000×100000"), "{}", refused.0);
    }

    #[test]
    fn damaged_images_are_refused() {
        let jpeg = photo(ImageFormat::Jpeg, 32, 32);
        assert!(process("image/jpeg", jpeg[..jpeg.len() / 2].to_vec(), 1_000_000).is_err());
        assert!(process("image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec(), 1_000_000).is_err());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
