//! Any cursor a client can send (`?cursor=`, an `auth` or `sync` frame):
//! `decode_cursor` names a position or refuses, never panics, and a position
//! it accepts encodes back to a cursor naming the same position.
#![no_main]

use chat_gateway::client_input::{decode_cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|cursor: &str| {
    if let Some(position) = decode_cursor(cursor) {
        assert_eq!(decode_cursor(&encode_cursor(position)), Some(position));
    }
});
