//! Reading the CHAT stream: one decoder from (subject, payload) to a typed
//! event, for every reader of the stream (the gateway's live delivery and
//! catch-up, history's ingest, notification's intake), so a subject kind or a
//! payload rule is written down once.
//!
//! An entry is trusted only as far as it decodes: its payload must be the
//! message its subject names, and must be about the conversation its subject
//! names. Anything else is [`EventError::Undecodable`], which each reader
//! sets aside in its own way; a subject kind this build does not know
//! ([`EventError::UnknownKind`]) comes from a newer writer and is passed over.

use chat_proto::events::v1::{
    ChangeKind, ConversationKind, MemberRole, MembershipChanged, Message, MessageChanged, ReadMarkerMoved,
    SystemEventKind,
};

use crate::nats::{ChatSubject, parse_chat_subject};

/// One entry of the CHAT stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A message, a system message included (`chat.conv.<id>.msg`).
    Message(Message),
    /// An edit or deletion, with the message as it is now (`chat.conv.<id>.edit`).
    Changed(MessageChanged),
    /// A read marker moved (`chat.conv.<id>.read`).
    Read(ReadMarkerMoved),
    /// The complete member list after a change (`chat.conv.<id>.members`).
    Membership(MembershipChanged),
}

/// Why an entry is not a [`ChatEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a CHAT subject of a kind this build knows.
    #[error("not a known chat subject: {0}")]
    UnknownKind(String),
    /// The subject is known and the payload does not fit it.
    #[error("undecodable {kind}: {reason}")]
    Undecodable { kind: &'static str, reason: String },
}

impl ChatEvent {
    /// The event stored under `subject` with `payload`.
    ///
    /// # Errors
    /// [`EventError::UnknownKind`] for a subject that is not one of the CHAT
    /// stream's kinds; [`EventError::Undecodable`] for a payload that does not
    /// decode as its kind, lacks the changed message, or names another
    /// conversation than its subject.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Self, EventError> {
        let kind = parse_chat_subject(subject).ok_or_else(|| EventError::UnknownKind(subject.to_owned()))?;
        let event = match kind {
            ChatSubject::Message { .. } => Self::Message(decode_as("message", payload)?),
            ChatSubject::Edit { .. } => {
                let changed: MessageChanged = decode_as("message change", payload)?;
                if changed.message.is_none() {
                    return Err(undecodable("message change", "it carries no message"));
                }
                Self::Changed(changed)
            }
            ChatSubject::Read { .. } => Self::Read(decode_as("read marker", payload)?),
            ChatSubject::Membership { .. } => Self::Membership(decode_as("membership change", payload)?),
        };
        if event.conversation_id() != kind.conversation_id() {
            return Err(undecodable(event.kind(), "its conversation is not its subject's"));
        }
        Ok(event.upgraded())
    }

    /// The same event with what builds before typed contracts wrote as words
    /// (`legacy_*` fields) in the typed fields, so no reader meets an old
    /// entry's words.
    #[allow(deprecated)]
    fn upgraded(mut self) -> Self {
        fn word<T>(legacy: &mut String, typed: &mut i32, from_word: fn(&str) -> Option<T>)
        where
            T: Into<i32>,
        {
            if *typed == 0
                && let Some(value) = from_word(legacy)
            {
                *typed = value.into();
            }
            legacy.clear();
        }
        fn system(message: &mut Message) {
            if let Some(event) = message.system.as_mut() {
                word(&mut event.legacy_event, &mut event.kind, SystemEventKind::from_word);
                word(&mut event.legacy_role, &mut event.role, MemberRole::from_word);
            }
        }
        match &mut self {
            Self::Message(message) => system(message),
            Self::Changed(changed) => {
                word(&mut changed.legacy_change, &mut changed.change, ChangeKind::from_word);
                changed.message.as_mut().map(system);
            }
            Self::Membership(members) => word(&mut members.legacy_kind, &mut members.kind, ConversationKind::from_word),
            Self::Read(_) => {}
        }
        self
    }

    /// The conversation it belongs to.
    pub fn conversation_id(&self) -> &str {
        match self {
            Self::Message(m) => &m.conversation_id,
            Self::Changed(c) => c.message.as_ref().map_or("", |m| m.conversation_id.as_str()),
            Self::Read(r) => &r.conversation_id,
            Self::Membership(m) => &m.conversation_id,
        }
    }

    /// What kind of entry it is, in words (for logs and dead letters).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::Changed(_) => "message change",
            Self::Read(_) => "read marker",
            Self::Membership(_) => "membership change",
        }
    }
}

fn decode_as<T: prost::Message + Default>(kind: &'static str, payload: &[u8]) -> Result<T, EventError> {
    T::decode(payload).map_err(|e| undecodable(kind, &e.to_string()))
}

fn undecodable(kind: &'static str, reason: &str) -> EventError {
    EventError::Undecodable { kind, reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::nats::{edit_subject, membership_subject, message_subject, read_subject};

    const CONVERSATION: &str = "0193a2b4-0000-7000-8000-000000000001";

    fn message() -> Message {
        Message { conversation_id: CONVERSATION.into(), seq: 3, body: "hi".into(), ..Default::default() }
    }

    #[test]
    fn every_subject_kind_decodes_to_its_event() {
        let changed = MessageChanged { message: Some(message()), ..Default::default() };
        let read = ReadMarkerMoved { conversation_id: CONVERSATION.into(), seq: 2, ..Default::default() };
        let members = MembershipChanged {
            conversation_id: CONVERSATION.into(),
            member_ids: vec!["a".into()],
            ..Default::default()
        };
        let cases = [
            (message_subject(CONVERSATION), message().encode_to_vec(), ChatEvent::Message(message())),
            (edit_subject(CONVERSATION), changed.encode_to_vec(), ChatEvent::Changed(changed)),
            (read_subject(CONVERSATION), read.encode_to_vec(), ChatEvent::Read(read)),
            (membership_subject(CONVERSATION), members.encode_to_vec(), ChatEvent::Membership(members)),
        ];
        for (subject, payload, expected) in cases {
            let event = ChatEvent::decode(&subject, &payload).expect(&subject);
            assert_eq!(event.conversation_id(), CONVERSATION);
            assert_eq!(event, expected);
        }
    }

    #[test]
    fn unknown_subjects_are_told_apart_from_bad_payloads() {
        for subject in ["chat.conv.x.reaction", "chat.typing.x", "chat.conv", "other"] {
            assert_eq!(
                ChatEvent::decode(subject, &message().encode_to_vec()),
                Err(EventError::UnknownKind(subject.to_owned()))
            );
        }
    }

    #[test]
    fn garbage_is_undecodable_and_says_what_it_should_have_been() {
        let garbage = [0xff, 0xff, 0xff, 0xff];
        for (subject, kind) in [
            (message_subject(CONVERSATION), "message"),
            (edit_subject(CONVERSATION), "message change"),
            (read_subject(CONVERSATION), "read marker"),
            (membership_subject(CONVERSATION), "membership change"),
        ] {
            match ChatEvent::decode(&subject, &garbage) {
                Err(EventError::Undecodable { kind: said, .. }) => assert_eq!(said, kind),
                other => panic!("{subject}: {other:?}"),
            }
        }
    }

    /// Entries written before typed contracts carry words; readers get the
    /// typed values.
    #[test]
    #[allow(deprecated)]
    fn entries_of_earlier_builds_are_read_as_typed_values() {
        use chat_proto::events::v1::SystemEvent;
        let legacy_system = SystemEvent {
            legacy_event: "role_changed".into(),
            legacy_role: "admin".into(),
            user_ids: vec!["u".into()],
            ..Default::default()
        };
        let old_message = Message { system: Some(legacy_system), ..message() };
        let Ok(ChatEvent::Message(read)) =
            ChatEvent::decode(&message_subject(CONVERSATION), &old_message.encode_to_vec())
        else {
            panic!("a message");
        };
        let system = read.system.expect("its system event");
        assert_eq!((system.kind(), system.role()), (SystemEventKind::RoleChanged, MemberRole::Admin));
        assert!(system.legacy_event.is_empty() && system.legacy_role.is_empty());

        let old_change =
            MessageChanged { message: Some(message()), legacy_change: "deleted".into(), ..Default::default() };
        let Ok(ChatEvent::Changed(changed)) =
            ChatEvent::decode(&edit_subject(CONVERSATION), &old_change.encode_to_vec())
        else {
            panic!("a change");
        };
        assert_eq!(changed.change(), ChangeKind::Deleted);

        let old_members = MembershipChanged {
            conversation_id: CONVERSATION.into(),
            legacy_kind: "group".into(),
            ..Default::default()
        };
        let Ok(ChatEvent::Membership(members)) =
            ChatEvent::decode(&membership_subject(CONVERSATION), &old_members.encode_to_vec())
        else {
            panic!("a membership change");
        };
        assert_eq!(members.kind(), ConversationKind::Group);
    }

    #[test]
    fn a_change_without_its_message_is_undecodable() {
        let empty = MessageChanged::default().encode_to_vec();
        assert!(matches!(
            ChatEvent::decode(&edit_subject(CONVERSATION), &empty),
            Err(EventError::Undecodable { kind: "message change", .. })
        ));
    }

    #[test]
    fn an_entry_about_another_conversation_is_undecodable() {
        let elsewhere = Message { conversation_id: "another".into(), ..message() };
        assert!(matches!(
            ChatEvent::decode(&message_subject(CONVERSATION), &elsewhere.encode_to_vec()),
            Err(EventError::Undecodable { kind: "message", .. })
        ));
        // An empty payload decodes as an empty message, which names no conversation.
        assert!(matches!(
            ChatEvent::decode(&read_subject(CONVERSATION), &[]),
            Err(EventError::Undecodable { kind: "read marker", .. })
        ));
    }
}
