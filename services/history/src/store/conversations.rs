//! Conversations and their members: creating one (a direct pair at most
//! once), who is in it and with which role, and the conversation as a member
//! sees it (last message, unread count) or as anyone sees it.

use chat_common::db::WriteConnection;
use chat_proto::events::v1::{ConversationKind, MemberRole, Message};
use chat_proto::history::v1::{Conversation, Member};
use sqlx::Row;

use super::{Store, db_int, stored};
use crate::error::Error;

/// What a user may see of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A member, with their role.
    Active {
        role: MemberRole,
    },
    /// Removed, or left: sees messages up to the removal, nothing after.
    Former {
        until_seq: u64,
    },
    None,
}

/// A new conversation as the caller asked for it, already validated.
pub struct NewConversation {
    pub id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub direct_key: Option<String>,
    pub creator_id: String,
    /// Every member, the creator included, without duplicates.
    pub member_ids: Vec<String>,
}

impl Store {
    /// Creates the conversation, or for a direct pair that exists already,
    /// returns the existing id with `false`.
    pub async fn create_conversation(&self, new: &NewConversation, now_ms: i64) -> Result<(String, bool), Error> {
        if let Some(key) = &new.direct_key
            && let Some(existing) = self.direct_conversation(key).await?
        {
            return Ok((existing, false));
        }
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, kind, title, direct_key, created_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&new.id)
        .bind(new.kind.word())
        .bind(new.title.as_deref())
        .bind(new.direct_key.as_deref())
        .bind(&new.creator_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Two requests raced to create the same direct pair: the other won.
            Err(e) if chat_common::db::is_unique_violation(&e) && new.direct_key.is_some() => {
                drop(tx);
                drop(connection);
                let key = new.direct_key.as_deref().unwrap_or_default();
                let existing =
                    self.direct_conversation(key).await?.ok_or(Error::NotFound(crate::error::NO_CONVERSATION))?;
                return Ok((existing, false));
            }
            Err(e) => return Err(e.into()),
        }
        for member in &new.member_ids {
            let role = if *member == new.creator_id { MemberRole::Owner } else { MemberRole::Member };
            sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&new.id)
            .bind(member)
            .bind(role.word())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        connection.succeeded();
        Ok((new.id.clone(), true))
    }

    async fn direct_conversation(&self, direct_key: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT id FROM conversations WHERE direct_key = $1")
            .bind(direct_key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Active members with their roles, in the order they joined.
    pub async fn members(&self, conversation_id: &str) -> Result<Vec<Member>, Error> {
        let rows = sqlx::query(
            "SELECT user_id, role, muted_at_ms FROM conversation_members
             WHERE conversation_id = $1 AND removed_at_seq IS NULL ORDER BY joined_at_ms, user_id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user_id: row.try_get("user_id")?,
                    role: role_of(row)?.into(),
                    muted: row.try_get::<Option<i64>, _>("muted_at_ms")?.is_some(),
                })
            })
            .collect()
    }

    /// Mutes (at `now_ms`) or unmutes a conversation for an active member;
    /// `false` when they are not one.
    pub async fn set_muted(
        &self,
        conversation_id: &str,
        user_id: &str,
        muted_at_ms: Option<i64>,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE conversation_members SET muted_at_ms = $1
             WHERE conversation_id = $2 AND user_id = $3 AND removed_at_seq IS NULL",
        )
        .bind(muted_at_ms)
        .bind(conversation_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// What `user_id` may see of a conversation.
    pub async fn access(&self, conversation_id: &str, user_id: &str) -> Result<Access, Error> {
        let row = sqlx::query(
            "SELECT role, removed_at_seq FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Access::None,
            Some(row) => match row.try_get::<Option<i64>, _>("removed_at_seq")? {
                None => Access::Active { role: role_of(&row)? },
                Some(seq) => Access::Former { until_seq: seq.max(0) as u64 },
            },
        })
    }

    /// Adds users (new, or former members coming back); returns those added.
    pub async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, Error> {
        let mut connection = WriteConnection::acquire(&self.pool).await?;
        let mut tx = connection.begin().await?;
        let mut added = Vec::new();
        for user_id in user_ids {
            let done = sqlx::query(
                "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE
                 SET role = excluded.role, joined_at_ms = excluded.joined_at_ms, removed_at_seq = NULL, muted_at_ms = NULL
                 WHERE conversation_members.removed_at_seq IS NOT NULL",
            )
            .bind(conversation_id)
            .bind(user_id)
            .bind(MemberRole::Member.word())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 1 {
                added.push(user_id.clone());
            }
        }
        tx.commit().await?;
        connection.succeeded();
        Ok(added)
    }

    /// Marks a member removed as of the system message at `seq`.
    pub async fn remove_member(&self, conversation_id: &str, user_id: &str, seq: u64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE conversation_members SET removed_at_seq = $1
             WHERE conversation_id = $2 AND user_id = $3 AND removed_at_seq IS NULL",
        )
        .bind(db_int(seq))
        .bind(conversation_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_role(&self, conversation_id: &str, user_id: &str, role: MemberRole) -> Result<(), Error> {
        sqlx::query(
            "UPDATE conversation_members SET role = $1
             WHERE conversation_id = $2 AND user_id = $3 AND removed_at_seq IS NULL",
        )
        .bind(role.word())
        .bind(conversation_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn rename(&self, conversation_id: &str, title: &str) -> Result<(), Error> {
        sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
            .bind(title)
            .bind(conversation_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The conversation as `user_id` sees it.
    /// `NotFound` when it does not exist, `NotMember` when the user is not in it.
    pub async fn conversation_for(&self, conversation_id: &str, user_id: &str) -> Result<Conversation, Error> {
        let (mut conversation, last_message) = self.members_and_last_message(conversation_id, user_id).await?;
        conversation.unread_count = self.unread_count(conversation_id, user_id, conversation.last_seq).await?;
        conversation.last_message = last_message;
        Ok(conversation)
    }

    /// The conversation with its members and `last_seq` only, if `user_id`
    /// is a member: what a membership check needs, at a cost that does not
    /// grow with the messages (unlike the unread count).
    pub async fn conversation_members_for(&self, conversation_id: &str, user_id: &str) -> Result<Conversation, Error> {
        Ok(self.members_and_last_message(conversation_id, user_id).await?.0)
    }

    /// The conversation with its members and `last_seq`, and its last message,
    /// if `user_id` is a member.
    async fn members_and_last_message(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<(Conversation, Option<Message>), Error> {
        let mut conversation = self.conversation_with_members(conversation_id).await?;
        if !conversation.member_ids.iter().any(|member| member == user_id) {
            return Err(Error::NotMember);
        }
        conversation.muted = conversation.muted_member_ids.iter().any(|member| member == user_id);
        let last_message = self.last_message(conversation_id).await?;
        conversation.last_seq = last_message.as_ref().map_or(0, |m| m.seq);
        Ok((conversation, last_message))
    }

    /// Ids of the conversations the user is an active member of.
    pub async fn conversation_ids_of(&self, user_id: &str) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT conversation_id FROM conversation_members WHERE user_id = $1 AND removed_at_seq IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every active conversation of the user with its active members' ids,
    /// in conversation order; only the lists of conversations with at most
    /// `lists_up_to` active members (the others come with none).
    pub async fn conversation_members_of(&self, user_id: &str, lists_up_to: u32) -> Result<Vec<Conversation>, Error> {
        // Each conversation's members are counted once, from an index, and
        // no further than one past the bound (a group of 10,000 costs what
        // one of 257 does); a conversation over the bound joins nothing
        // (`listed_id` is NULL).
        let rows = sqlx::query(
            "WITH mine AS MATERIALIZED (
                SELECT c.conversation_id,
                       CASE WHEN (SELECT COUNT(*) FROM (SELECT 1 FROM conversation_members a
                                   WHERE a.conversation_id = c.conversation_id AND a.removed_at_seq IS NULL
                                   LIMIT $2 + 1) AS counted) <= $2
                            THEN c.conversation_id END AS listed_id
                FROM conversation_members c WHERE c.user_id = $1 AND c.removed_at_seq IS NULL)
             SELECT mine.conversation_id, other.user_id FROM mine
             LEFT JOIN conversation_members other
               ON other.conversation_id = mine.listed_id AND other.removed_at_seq IS NULL
             ORDER BY mine.conversation_id",
        )
        .bind(user_id)
        .bind(i64::from(lists_up_to))
        .fetch_all(&self.pool)
        .await?;
        let mut conversations: Vec<Conversation> = Vec::new();
        for row in &rows {
            let conversation_id: String = row.try_get("conversation_id")?;
            let member: Option<String> = row.try_get("user_id")?;
            if conversations.last().is_none_or(|last| last.conversation_id != conversation_id) {
                conversations.push(Conversation { conversation_id, ..Default::default() });
            }
            if let (Some(member), Some(last)) = (member, conversations.last_mut()) {
                last.member_ids.push(member);
            }
        }
        Ok(conversations)
    }

    /// Everyone who shares an active conversation with the user, through
    /// which presence is shared (`SHARED_UP_TO_MEMBERS`; members are counted
    /// no further than one past it).
    pub async fn contacts_of(&self, user_id: &str) -> Result<Vec<String>, Error> {
        let shared_up_to = i64::try_from(chat_common::nats::presence::SHARED_UP_TO_MEMBERS).unwrap_or(i64::MAX);
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT other.user_id FROM conversation_members mine
             JOIN conversation_members other
               ON other.conversation_id = mine.conversation_id AND other.removed_at_seq IS NULL
             WHERE mine.user_id = $1 AND mine.removed_at_seq IS NULL
               AND (SELECT COUNT(*) FROM (SELECT 1 FROM conversation_members active
                     WHERE active.conversation_id = mine.conversation_id
                       AND active.removed_at_seq IS NULL
                     LIMIT $2 + 1) AS counted) <= $2",
        )
        .bind(user_id)
        .bind(shared_up_to)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every conversation of the user, the most recently active first.
    pub async fn conversations_of(&self, user_id: &str) -> Result<Vec<Conversation>, Error> {
        let ids = self.conversation_ids_of(user_id).await?;
        let mut conversations = Vec::with_capacity(ids.len());
        for id in ids {
            conversations.push(self.conversation_for(&id, user_id).await?);
        }
        conversations
            .sort_by_key(|c| std::cmp::Reverse(c.last_message.as_ref().map_or(c.created_at_ms, |m| m.sent_at_ms)));
        Ok(conversations)
    }

    pub async fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2 AND removed_at_seq IS NULL",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub async fn conversation_exists(&self, conversation_id: &str) -> Result<bool, Error> {
        Ok(self.conversation_kind(conversation_id).await?.is_some())
    }

    /// Its kind; `None` for an unknown conversation.
    pub async fn conversation_kind(&self, conversation_id: &str) -> Result<Option<ConversationKind>, Error> {
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?;
        kind.map(|word| stored("conversation kind", &word, ConversationKind::from_word)).transpose()
    }

    /// The conversation and its active members, as anyone sees it (no unread count).
    pub async fn conversation_state(&self, conversation_id: &str) -> Result<Conversation, Error> {
        let mut conversation = self.conversation_with_members(conversation_id).await?;
        conversation.last_seq = self.last_seq(conversation_id).await?;
        Ok(conversation)
    }

    /// The conversation's own row and its active members; nothing about its
    /// messages. `NotFound` when it does not exist.
    async fn conversation_with_members(&self, conversation_id: &str) -> Result<Conversation, Error> {
        let row = sqlx::query("SELECT id, kind, title, created_at_ms FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound(crate::error::NO_CONVERSATION))?;
        let members = self.members(conversation_id).await?;
        Ok(Conversation {
            conversation_id: row.try_get("id")?,
            kind: stored("conversation kind", &row.try_get::<String, _>("kind")?, ConversationKind::from_word)?.into(),
            title: row.try_get::<Option<String>, _>("title")?.unwrap_or_default(),
            member_ids: members.iter().map(|m| m.user_id.clone()).collect(),
            muted_member_ids: members.iter().filter(|m| m.muted).map(|m| m.user_id.clone()).collect(),
            members,
            created_at_ms: row.try_get("created_at_ms")?,
            ..Default::default()
        })
    }

    /// Messages from others after the user's read marker, up to `last_seq`.
    /// The bound keeps the count in step with the `last_message` read just
    /// before it: ingest may commit in between, and a client that sees the
    /// newer count beside the older last message counts a live frame twice.
    /// Messages of users the reader blocked reach them hidden, and are not counted.
    async fn unread_count(&self, conversation_id: &str, user_id: &str, last_seq: u64) -> Result<u64, Error> {
        let hidden: Vec<String> = self.blocks.blocked_by(user_id).into_iter().map(|(id, _)| id).collect();
        let sql = match (hidden.is_empty(), self.backend) {
            (true, _) => UNREAD,
            (false, chat_common::db::Backend::Sqlite) => UNREAD_BUT_HIDDEN_SQLITE,
            (false, chat_common::db::Backend::Postgres) => UNREAD_BUT_HIDDEN_POSTGRES,
        };
        let mut query = sqlx::query_scalar(sql).bind(conversation_id).bind(user_id).bind(db_int(last_seq));
        if !hidden.is_empty() {
            query = query.bind(serde_json::Value::from(hidden).to_string());
        }
        let count: i64 = query.fetch_one(&self.pool).await?;
        Ok(count.max(0) as u64)
    }
}

/// Unread: from others, not system messages, up to `$3`, past the marker.
macro_rules! unread {
    () => {
        "SELECT COUNT(*) FROM messages m
         WHERE m.conversation_id = $1 AND m.sender_id <> $2 AND m.system_event IS NULL AND m.seq <= $3
           AND m.seq > COALESCE((SELECT r.seq FROM read_markers r
                                 WHERE r.conversation_id = $1 AND r.user_id = $2), 0)"
    };
}
const UNREAD: &str = unread!();
/// The same, but for senders in the JSON array `$4`.
const UNREAD_BUT_HIDDEN_SQLITE: &str = concat!(unread!(), " AND m.sender_id NOT IN (SELECT value FROM json_each($4))");
const UNREAD_BUT_HIDDEN_POSTGRES: &str =
    concat!(unread!(), " AND m.sender_id NOT IN (SELECT jsonb_array_elements_text(CAST($4 AS jsonb)))");

fn role_of(row: &sqlx::any::AnyRow) -> Result<MemberRole, Error> {
    stored("member role", &row.try_get::<String, _>("role")?, MemberRole::from_word)
}
