//! Ports for processes a test starts and may restart on the same address.
//!
//! A port taken with `bind(127.0.0.1:0)` and let go comes from the kernel's
//! ephemeral range, the same range every outgoing connection on the machine
//! takes its local port from: in the gap before the process binds it (or
//! while a killed process is down), a client socket can take it, and the
//! process then fails to bind while a probe of the address reaches someone
//! else. So ports come from below the ephemeral range instead, each handed
//! out once per test binary.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (32768–60999), above the ports
/// well-known servers use.
const FIRST: u32 = 20_000;
const LAST: u32 = 32_767;
const SPAN: u32 = LAST - FIRST + 1;

/// A port no other caller in this process got, free when asked.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts somewhere else, so two runs side by side
    // rarely walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("below 65536");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {LAST} on 127.0.0.1");
}

/// 127.0.0.1 with a [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_handed_out_once_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|&p| (FIRST..=LAST).contains(&u32::from(p))));
    }
}
