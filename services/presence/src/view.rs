//! What one presence instance knows, rebuilt from the three presence buckets,
//! and the decision it takes from that: when a user's announced state must
//! change. Pure logic, no I/O, so the rules (grace period, dead gateways,
//! compare-and-set revisions) are tested on their own.
//!
//! A user with a counting socket (see `chat_common::sockets`) is online at once; a user without one is announced offline
//! only after the grace period, so a reconnect or a switch of devices within
//! it produces no offline/online pair.

use std::collections::{HashMap, HashSet};

use chat_common::sockets::SocketIndex;
use std::time::{Duration, Instant};

use chat_proto::presence::v1::{PresenceState, PresenceStatus, UserPresence};

/// A user's announced state and the bucket revision it was read at.
#[derive(Debug, Clone, Default)]
struct Announced {
    state: PresenceState,
    revision: u64,
}

/// A write to the users bucket: `state` for `user_id`, if the key is still at `revision`.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub user_id: String,
    pub state: PresenceState,
    pub revision: u64,
}

pub struct View {
    grace: Duration,
    pub sockets: SocketIndex,
    announced: HashMap<String, Announced>,
    /// Users with no counting socket, still announced online: when the grace
    /// period ends, and when they were last seen.
    leaving: HashMap<String, (Instant, i64)>,
}

impl View {
    pub fn new(grace: Duration) -> Self {
        Self { grace, sockets: SocketIndex::default(), announced: HashMap::new(), leaving: HashMap::new() }
    }

    /// The users bucket holds `state` for `user_id` at `revision`.
    /// Returns whether this is news (a newer revision than known).
    pub fn announced(&mut self, user_id: &str, state: PresenceState, revision: u64) -> bool {
        if self.announced.get(user_id).is_some_and(|a| a.revision >= revision) {
            return false;
        }
        self.announced.insert(user_id.to_owned(), Announced { state, revision });
        true
    }

    /// What must be written for `user_id` now, if anything.
    pub fn decide(&mut self, user_id: &str, now: Instant, now_ms: i64) -> Option<Announcement> {
        let connected = self.sockets.is_connected(user_id);
        let current = self.announced.get(user_id).cloned().unwrap_or_default();
        if connected {
            self.leaving.remove(user_id);
            return (!current.state.online).then(|| Announcement {
                user_id: user_id.to_owned(),
                state: PresenceState {
                    online: true,
                    last_seen_at_ms: current.state.last_seen_at_ms,
                    changed_at_ms: now_ms,
                },
                revision: current.revision,
            });
        }
        if !current.state.online {
            self.leaving.remove(user_id);
            return None;
        }
        let (until, last_seen) = *self.leaving.entry(user_id.to_owned()).or_insert((now + self.grace, now_ms));
        (until <= now).then(|| Announcement {
            user_id: user_id.to_owned(),
            state: PresenceState { online: false, last_seen_at_ms: last_seen, changed_at_ms: now_ms },
            revision: current.revision,
        })
    }

    /// Users waiting out their grace period.
    pub fn leaving(&self) -> Vec<String> {
        self.leaving.keys().cloned().collect()
    }

    /// Every user this instance has an opinion on: to reconsider them all.
    pub fn users(&self) -> Vec<String> {
        let mut users: HashSet<&str> = self.sockets.users().collect();
        users.extend(self.announced.iter().filter(|(_, a)| a.state.online).map(|(u, _)| u.as_str()));
        users.into_iter().map(str::to_owned).collect()
    }

    /// The user's presence as this instance sees it.
    pub fn presence(&self, user_id: &str) -> UserPresence {
        let state = self.announced.get(user_id).map(|a| a.state).unwrap_or_default();
        UserPresence {
            user_id: user_id.to_owned(),
            status: PresenceStatus::of(state.online).into(),
            last_seen_at_ms: if state.online { 0 } else { state.last_seen_at_ms },
            connected_devices: self.sockets.devices(user_id).len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn online(view: &mut View, user: &str, revision: u64) {
        assert!(view.announced(user, PresenceState { online: true, last_seen_at_ms: 0, changed_at_ms: 1 }, revision));
    }

    #[test]
    fn a_socket_on_a_live_gateway_makes_its_user_online_at_once() {
        let now = Instant::now();
        let mut view = View::new(GRACE);
        view.sockets.gateway("g1", true, now);
        view.sockets.socket_opened("g1.c1", "alice", "d1", 1, 0);
        let announcement = view.decide("alice", now, 1000).expect("goes online");
        assert!(announcement.state.online);
        assert_eq!(announcement.revision, 0, "created, not overwritten");
        online(&mut view, "alice", 7);
        assert_eq!(view.decide("alice", now, 1000), None, "already online");
    }

    #[test]
    fn sockets_of_an_unknown_or_dead_gateway_do_not_count() {
        let now = Instant::now();
        let mut view = View::new(GRACE);
        view.sockets.socket_opened("g1.c1", "alice", "d1", 1, 0);
        assert_eq!(view.decide("alice", now, 0), None);
        view.sockets.gateway("g1", true, now);
        assert!(view.decide("alice", now, 0).is_some());
        assert_eq!(view.sockets.gateway("g1", false, now), vec!["alice".to_owned()]);
        assert_eq!(view.presence("alice").connected_devices, 0);
    }

    #[test]
    fn offline_comes_only_after_the_grace_period_and_a_return_cancels_it() {
        let start = Instant::now();
        let mut view = View::new(GRACE);
        view.sockets.gateway("g1", true, start);
        online(&mut view, "alice", 3);
        assert_eq!(view.decide("alice", start, 1000), None, "no socket yet, but within grace");
        assert_eq!(view.decide("alice", start + GRACE / 2, 3500), None);
        view.sockets.socket_opened("g1.c2", "alice", "d1", 4, 0);
        assert_eq!(view.decide("alice", start + GRACE, 6000), None, "back within grace: nothing to say");
        view.sockets.socket_closed("g1.c2");
        let later = start + GRACE * 2;
        assert_eq!(view.decide("alice", later, 11_000), None, "the grace period starts again");
        let offline = view.decide("alice", later + GRACE, 16_000).expect("goes offline");
        assert!(!offline.state.online);
        assert_eq!(offline.state.last_seen_at_ms, 11_000, "last seen when the last socket went");
        assert_eq!(offline.revision, 3);
    }

    #[test]
    fn one_device_staying_keeps_the_user_online() {
        let now = Instant::now();
        let mut view = View::new(GRACE);
        view.sockets.gateway("g1", true, now);
        view.sockets.gateway("g2", true, now);
        view.sockets.socket_opened("g1.c1", "alice", "phone", 1, 0);
        view.sockets.socket_opened("g2.c2", "alice", "laptop", 2, 0);
        online(&mut view, "alice", 3);
        view.sockets.socket_closed("g1.c1");
        assert_eq!(view.decide("alice", now + GRACE * 3, 0), None);
        assert_eq!(view.presence("alice").connected_devices, 1);
    }
}
