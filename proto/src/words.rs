//! The word protocol v1 uses for each value of the contracts' enums (the same
//! word the databases store): `"group"`, `"owner"`, `"member_removed"`, ...
//! One table per enum, so the JSON a client reads, the rows history keeps and
//! the enum every service matches on cannot drift apart.

use crate::events::v1::{ChangeKind, ConversationKind, MemberRole, SystemEventKind};
use crate::presence::v1::PresenceStatus;

macro_rules! words {
    ($enum:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $enum {
            /// Its word in protocol v1; empty for `Unspecified`.
            pub fn word(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                    Self::Unspecified => "",
                }
            }

            /// The value `word` names in protocol v1, if any.
            pub fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

words!(ConversationKind { Direct => "direct", Group => "group" });
words!(MemberRole { Member => "member", Admin => "admin", Owner => "owner" });
words!(ChangeKind { Edited => "edited", Deleted => "deleted" });
words!(SystemEventKind {
    Created => "created",
    MembersAdded => "members_added",
    MemberRemoved => "member_removed",
    MemberLeft => "member_left",
    Renamed => "renamed",
    RoleChanged => "role_changed",
});
words!(PresenceStatus { Online => "online", Offline => "offline" });

impl MemberRole {
    /// Owners and admins run a group: rename it, add and remove members,
    /// delete others' messages.
    pub fn runs_the_group(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

impl PresenceStatus {
    pub fn of(online: bool) -> Self {
        if online { Self::Online } else { Self::Offline }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value has a word, and the word names it again.
    #[test]
    fn words_go_both_ways() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: impl IntoIterator<Item = T>,
            word: fn(T) -> &'static str,
            from: fn(&str) -> Option<T>,
        ) {
            for value in all {
                assert!(!word(value).is_empty(), "{value:?}");
                assert_eq!(from(word(value)), Some(value));
            }
            assert_eq!(from(""), None);
            assert_eq!(from("nonsense"), None);
        }
        check([ConversationKind::Direct, ConversationKind::Group], ConversationKind::word, ConversationKind::from_word);
        check([MemberRole::Member, MemberRole::Admin, MemberRole::Owner], MemberRole::word, MemberRole::from_word);
        check([ChangeKind::Edited, ChangeKind::Deleted], ChangeKind::word, ChangeKind::from_word);
        check(
            (1..=6).map(|n| SystemEventKind::try_from(n).expect("a kind")),
            SystemEventKind::word,
            SystemEventKind::from_word,
        );
        check([PresenceStatus::Online, PresenceStatus::Offline], PresenceStatus::word, PresenceStatus::from_word);
    }
}
