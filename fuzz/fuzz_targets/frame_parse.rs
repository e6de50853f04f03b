//! Any text a client can put in a WebSocket frame: `parse` answers a frame or
//! a protocol error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(error) = chat_gateway::client_input::parse_frame(text) {
        // The error frame the client would get is rendered too.
        let _ = error.to_frame();
    }
});
