//! Group management: rename, add and remove members, leave, change roles.
//! Every change is recorded in the conversation itself as a system message
//! (appended with the same compare-and-set as any message, so it has its place
//! in `seq`) and as a membership snapshot for the gateways' caches.
//!
//! Roles: the creator is the owner; owners and admins rename, add and remove
//! members; only the owner changes roles; nobody removes the owner, who may
//! leave (the longest-standing admin, else member, becomes owner).

use chat_common::conversation_log::{AppendError, ConversationLog, Outgoing};
use chat_proto::events::v1::{ConversationKind, MemberRole, SystemEvent, SystemEventKind};
use chat_proto::history::v1::{
    Actor, AddMembersRequest, Conversation, RemoveMemberRequest, RenameConversationRequest, SetMemberRoleRequest,
};

use crate::error::{Error, NO_CONVERSATION, NOT_A_MEMBER};
use crate::store::{Access, Store};
use crate::validate::{self, TITLE_MAX};

/// Stands in for a device when a change did not come from a client.
const NO_DEVICE: &str = "00000000-0000-0000-0000-000000000000";

pub struct Groups<'a> {
    pub store: &'a Store,
    pub log: &'a ConversationLog,
    /// The most members a group may have (`HISTORY_MAX_GROUP_MEMBERS`).
    pub max_members: usize,
}

/// Refuses a group of more than `max` members.
pub fn check_size(members: usize, max: usize) -> Result<(), Error> {
    if members > max {
        return Err(Error::InvalidArgument(format!("a group has at most {max} members")));
    }
    Ok(())
}

/// The member making a change.
pub struct Who {
    pub user_id: String,
    pub device_id: String,
}

/// An operator acting through the admin service: no user, no device.
pub fn operator() -> Who {
    Who { user_id: NO_DEVICE.to_owned(), device_id: NO_DEVICE.to_owned() }
}

pub fn actor(actor: Option<Actor>) -> Result<Who, Error> {
    let actor = actor.ok_or_else(|| Error::InvalidArgument("actor is required".into()))?;
    let user_id = validate::uuid("actor.user_id", &actor.user_id)?;
    let device_id = if actor.device_id.is_empty() {
        NO_DEVICE.to_owned()
    } else {
        validate::uuid("actor.device_id", &actor.device_id)?
    };
    Ok(Who { user_id, device_id })
}

/// A title: trimmed, 1 to 128 characters, no control characters.
pub fn title(raw: &str) -> Result<String, Error> {
    let title = raw.trim();
    if title.is_empty() || title.chars().count() > TITLE_MAX || title.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "a group needs a title of 1 to {TITLE_MAX} characters without control characters"
        )));
    }
    Ok(title.to_owned())
}

impl Groups<'_> {
    /// The actor's role in a group they are an active member of. Membership
    /// is checked before the kind, so a stranger is refused alike for a
    /// direct conversation and a group and learns nothing about either; only
    /// a member hears that a direct conversation cannot change.
    async fn role_in_group(&self, conversation_id: &str, who: &Who) -> Result<MemberRole, Error> {
        let kind = self.store.conversation_kind(conversation_id).await?.ok_or(Error::NotFound(NO_CONVERSATION))?;
        let Access::Active { role } = self.store.access(conversation_id, &who.user_id).await? else {
            return Err(Error::NotMember);
        };
        if kind != ConversationKind::Group {
            return Err(Error::FailedPrecondition("a direct conversation has fixed members and no title".into()));
        }
        Ok(role)
    }

    /// Appends a system message; returns its `seq`.
    pub async fn record(
        &self,
        conversation_id: &str,
        sender_id: &str,
        sender_device_id: &str,
        event: SystemEvent,
        body: &str,
    ) -> Result<u64, Error> {
        let persisted = self.store.last_seq(conversation_id).await?;
        let client_msg_id = format!("system:{}", uuid::Uuid::new_v4());
        let out = Outgoing {
            conversation_id,
            sender_id,
            sender_device_id,
            client_msg_id: &client_msg_id,
            body,
            system: Some(event),
            attachments: &[],
        };
        let published = self.log.append(&out, persisted).await.map_err(|e| match e {
            AppendError::Unavailable(cause) => Error::Unavailable(format!("cannot record the change: {cause}")),
            AppendError::Busy => Error::Unavailable("the conversation is too busy; retry".into()),
            AppendError::Corrupt(what) => Error::Unexpected(anyhow::anyhow!("unreadable stream entry: {what}")),
        })?;
        Ok(published.message.seq)
    }

    async fn record_by(&self, conversation_id: &str, who: &Who, event: SystemEvent, body: &str) -> Result<u64, Error> {
        self.record(conversation_id, &who.user_id, &who.device_id, event, body).await
    }

    pub async fn rename(&self, req: RenameConversationRequest) -> Result<Conversation, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let who = actor(req.actor)?;
        let title = title(&req.title)?;
        let role = self.role_in_group(&conversation_id, &who).await?;
        require(role.runs_the_group(), "only owners and admins rename a group")?;
        self.store.rename(&conversation_id, &title).await?;
        let event = system_event(SystemEventKind::Renamed, vec![], title.clone(), MemberRole::Unspecified);
        self.record_by(&conversation_id, &who, event, &format!("renamed the group to {title}")).await?;
        self.store.conversation_state(&conversation_id).await
    }

    /// Adds members; the caller then announces the new membership and the
    /// system message is appended after it, so new members receive it.
    pub async fn add(&self, req: AddMembersRequest) -> Result<(Conversation, Vec<String>, Who), Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let who = actor(req.actor)?;
        let mut user_ids = Vec::new();
        for id in &req.user_ids {
            let id = validate::uuid("user_ids", id)?;
            if !user_ids.contains(&id) {
                user_ids.push(id);
            }
        }
        if user_ids.is_empty() {
            return Err(Error::InvalidArgument("user_ids must name at least one user".into()));
        }
        let role = self.role_in_group(&conversation_id, &who).await?;
        require(role.runs_the_group(), "only owners and admins add members")?;
        let current = self.store.members(&conversation_id).await?;
        let present: std::collections::HashSet<&str> = current.iter().map(|m| m.user_id.as_str()).collect();
        let joining = user_ids.iter().filter(|u| !present.contains(u.as_str())).count();
        check_size(current.len() + joining, self.max_members)?;
        let added = self.store.add_members(&conversation_id, &user_ids, chat_common::time::now_ms()).await?;
        Ok((self.store.conversation_state(&conversation_id).await?, added, who))
    }

    /// The system message that opens every group (its seq 1).
    pub async fn record_created(&self, conversation: &Conversation, creator_id: &str) -> Result<(), Error> {
        let event = system_event(
            SystemEventKind::Created,
            conversation.member_ids.clone(),
            conversation.title.clone(),
            MemberRole::Unspecified,
        );
        self.record(&conversation.conversation_id, creator_id, NO_DEVICE, event, "created the group").await.map(|_| ())
    }

    /// The system message for members added, once they are announced.
    pub async fn record_added(&self, conversation_id: &str, who: &Who, added: Vec<String>) -> Result<(), Error> {
        let n = added.len();
        let event = system_event(SystemEventKind::MembersAdded, added, String::new(), MemberRole::Unspecified);
        let body = if n == 1 { "added a member".to_owned() } else { format!("added {n} members") };
        self.record_by(conversation_id, who, event, &body).await.map(|_| ())
    }

    /// Removes a member (or the actor leaves). The system message comes first,
    /// so the member removed still receives it; their access ends at its seq.
    pub async fn remove(&self, req: RemoveMemberRequest) -> Result<Conversation, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let target = validate::uuid("user_id", &req.user_id)?;
        let (who, role) = if req.by_operator {
            let kind = self.store.conversation_kind(&conversation_id).await?.ok_or(Error::NotFound(NO_CONVERSATION))?;
            if kind != ConversationKind::Group {
                return Err(Error::FailedPrecondition("a direct conversation has fixed members".into()));
            }
            // An operator may remove anyone, as the owner removes an admin.
            (operator(), MemberRole::Owner)
        } else {
            let who = actor(req.actor)?;
            let role = self.role_in_group(&conversation_id, &who).await?;
            (who, role)
        };
        let leaving = target == who.user_id;
        let target_role = if leaving {
            role
        } else {
            match self.store.access(&conversation_id, &target).await? {
                Access::Active { role } => role,
                _ => return Err(Error::NotFound(NOT_A_MEMBER)),
            }
        };
        if !leaving {
            require(role.runs_the_group(), "only owners and admins remove members")?;
            require(target_role != MemberRole::Owner || req.by_operator, "the owner cannot be removed")?;
            require(target_role != MemberRole::Admin || role == MemberRole::Owner, "only the owner removes an admin")?;
        }
        let (kind, body) = if leaving {
            (SystemEventKind::MemberLeft, "left")
        } else {
            (SystemEventKind::MemberRemoved, "removed a member")
        };
        let event = system_event(kind, vec![target.clone()], String::new(), MemberRole::Unspecified);
        let seq = self.record_by(&conversation_id, &who, event, body).await?;
        self.store.remove_member(&conversation_id, &target, seq).await?;
        if target_role == MemberRole::Owner {
            self.hand_over_ownership(&conversation_id, &who).await?;
        }
        self.store.conversation_state(&conversation_id).await
    }

    /// After the owner left: the longest-standing admin, else member, owns the group.
    async fn hand_over_ownership(&self, conversation_id: &str, who: &Who) -> Result<(), Error> {
        let members = self.store.members(conversation_id).await?;
        let heir = members.iter().find(|m| m.role() == MemberRole::Admin).or_else(|| members.first());
        if let Some(heir) = heir {
            self.store.set_role(conversation_id, &heir.user_id, MemberRole::Owner).await?;
            let event = system_event(
                SystemEventKind::RoleChanged,
                vec![heir.user_id.clone()],
                String::new(),
                MemberRole::Owner,
            );
            self.record_by(conversation_id, who, event, "handed over ownership").await?;
        }
        Ok(())
    }

    pub async fn set_role(&self, req: SetMemberRoleRequest) -> Result<Conversation, Error> {
        let conversation_id = validate::uuid("conversation_id", &req.conversation_id)?;
        let new_role = req.role();
        let who = actor(req.actor)?;
        let target = validate::uuid("user_id", &req.user_id)?;
        if !matches!(new_role, MemberRole::Admin | MemberRole::Member) {
            return Err(Error::InvalidArgument("role must be \"admin\" or \"member\"".into()));
        }
        let role = self.role_in_group(&conversation_id, &who).await?;
        require(role == MemberRole::Owner, "only the owner changes roles")?;
        match self.store.access(&conversation_id, &target).await? {
            Access::Active { role: MemberRole::Owner } => {
                return Err(Error::FailedPrecondition("the owner's role cannot change".into()));
            }
            Access::Active { .. } => {}
            _ => return Err(Error::NotFound(NOT_A_MEMBER)),
        }
        self.store.set_role(&conversation_id, &target, new_role).await?;
        let event = system_event(SystemEventKind::RoleChanged, vec![target], String::new(), new_role);
        self.record_by(&conversation_id, &who, event, &format!("made a member {}", new_role.word())).await?;
        self.store.conversation_state(&conversation_id).await
    }
}

fn system_event(kind: SystemEventKind, user_ids: Vec<String>, title: String, role: MemberRole) -> SystemEvent {
    SystemEvent { kind: kind.into(), user_ids, title, role: role.into(), ..Default::default() }
}

fn require(allowed: bool, why: &str) -> Result<(), Error> {
    if allowed { Ok(()) } else { Err(Error::Forbidden(why.to_owned())) }
}
