// The web client: state kept from protocol v1's frames and answers, and the
// page drawn from it. Every text from the network reaches the page through
// textContent, never as HTML.

import { Api } from "./api.js";
import { Tray, describe, el, forget, renderAttachments } from "./attachments.js";
import { Connection } from "./connection.js";

const MAX_BODY_BYTES = 16384;
const PAGE = 50;
const TYPING_REPEAT_MS = 3000;
const HIDDEN_TEXT = "Message from a blocked user";

const api = new Api();
let connection = null;
let tray = null; // files waiting to be sent
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  conversations: new Map(), // id → conversation
  users: new Map(), // id → username
  presence: new Map(), // id → { status, last_seen_at }
  typing: new Map(), // conversation id → Set of user ids
  open: null,
  typingSentAt: 0,
  blocked: new Map(), // user id → blocked_at: the users this user blocked
  reported: new Set(), // message ids reported from this tab
  reporting: null, // the message the report dialog is about
};

// ---------- small helpers ----------

function showError(id, error) {
  $(id).textContent = error ? error.message || String(error) : "";
}

function time(iso) {
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function lastSeen(iso) {
  if (!iso) return "offline";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return `last seen ${today ? time(iso) : date.toLocaleDateString()}`;
}

function bytes(text) {
  return new TextEncoder().encode(text).length;
}

async function userName(id) {
  if (state.users.has(id)) return state.users.get(id);
  try {
    const user = await api.get(`/v1/users/${encodeURIComponent(id)}`);
    state.users.set(id, user.display_name || user.username);
  } catch {
    state.users.set(id, "unknown");
  }
  return state.users.get(id);
}

function newer(a, b) {
  if (!a) return b;
  if (!b) return a;
  return a.seq >= b.seq ? a : b;
}

function others(conversation) {
  return conversation.members.filter((id) => id !== state.me.user_id);
}

/** What a message says in one line: the conversation list, a notification, the report dialog. */
function preview(message) {
  if (message.hidden) return HIDDEN_TEXT;
  return message.body || describe(message.attachments);
}

function titleOf(conversation) {
  if (conversation.kind === "group") return conversation.title;
  const [other] = others(conversation);
  return state.users.get(other) || "…";
}

// ---------- conversations ----------

function adopt(raw) {
  const known = state.conversations.get(raw.conversation_id);
  const conversation = known || { messages: new Map(), pending: new Map(), markers: new Map(), hasMore: true, loaded: false };
  // A reply that left before a live frame was counted is older than that count.
  const stale = (raw.last_message?.seq ?? 0) < (conversation.last_message?.seq ?? 0);
  Object.assign(conversation, {
    conversation_id: raw.conversation_id,
    kind: raw.kind,
    title: raw.title,
    members: raw.members,
    muted: raw.muted ?? conversation.muted ?? false,
    last_message: newer(raw.last_message, conversation.last_message),
    unread_count: (stale ? undefined : raw.unread_count) ?? conversation.unread_count ?? 0,
  });
  for (const marker of raw.read_markers || []) conversation.markers.set(marker.user_id, marker.seq);
  state.conversations.set(raw.conversation_id, conversation);
  const unknown = raw.members.filter((id) => id !== state.me.user_id && !state.presence.has(id));
  if (unknown.length > 0) loadPresence(unknown).then(renderConversations, () => {});
  return conversation;
}

/** Presence of new contacts: frames only bring later changes. */
async function loadPresence(ids) {
  for (let i = 0; i < ids.length; i += 200) {
    const { presence } = await api.get(`/v1/presence?user_ids=${ids.slice(i, i + 200).join(",")}`);
    for (const p of presence) if (!state.presence.has(p.user_id)) state.presence.set(p.user_id, p);
  }
  renderPresenceLine();
}

async function loadConversations() {
  const { conversations } = await api.get("/v1/conversations");
  for (const raw of conversations) adopt(raw);
  const everyone = new Set();
  for (const c of state.conversations.values()) for (const id of c.members) everyone.add(id);
  await Promise.all([...everyone].map(userName));
  renderConversations();
}

async function conversationFor(id) {
  if (!state.conversations.has(id)) {
    const raw = await api.get(`/v1/conversations/${id}`);
    await Promise.all(raw.members.map(userName));
    adopt(raw);
  }
  return state.conversations.get(id);
}

function sortedConversations() {
  const stamp = (c) => (c.last_message ? Date.parse(c.last_message.sent_at) : 0);
  return [...state.conversations.values()].sort((a, b) => stamp(b) - stamp(a));
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of sortedConversations()) {
    let dot;
    if (c.kind === "group") {
      dot = el("span", { class: "dot group", "aria-hidden": "true" });
    } else {
      const presence = state.presence.get(others(c)[0]);
      const online = presence && presence.status === "online";
      dot = el("span", { class: online ? "dot online" : "dot", role: "img", "aria-label": online ? "online" : lastSeen(presence && presence.last_seen_at), "data-presence": online ? "online" : "offline" });
    }
    const badge = c.unread_count > 0 ? el("span", { class: "badge", text: String(c.unread_count), "aria-label": `${c.unread_count} unread` }) : null;
    const muted = c.muted ? el("span", { class: "muted-flag", text: "muted", title: "Muted: no notifications" }) : null;
    const last = c.last_message ? preview(c.last_message) : "No messages yet";
    const button = el(
      "button",
      { "data-conversation": c.conversation_id, "aria-current": String(state.open === c.conversation_id) },
      dot,
      el("span", { class: "name", text: titleOf(c) }),
      el("span", { class: "flags" }, muted, badge),
      el("span", { class: c.last_message && c.last_message.hidden ? "last from-blocked" : "last", text: last }),
    );
    button.addEventListener("click", () => openConversation(c.conversation_id));
    list.append(el("li", {}, button));
  }
}

// ---------- one conversation ----------

async function openConversation(id) {
  state.open = id;
  $("chat-view").classList.add("in-chat");
  $("chat").hidden = false;
  $("empty").hidden = true;
  const conversation = await conversationFor(id);
  if (!conversation.loaded) await loadNewest(conversation);
  renderChat();
  markRead(conversation);
  $("composer-input").focus();
}

/** The conversation and its newest page, as the server shows them to this user now. */
async function loadNewest(conversation) {
  const id = conversation.conversation_id;
  adopt(await api.get(`/v1/conversations/${id}`));
  const page = await api.get(`/v1/conversations/${id}/messages?limit=${PAGE}`);
  // Older messages kept from before may show a block as it was then: "Load older" brings them again.
  const first = page.messages.length > 0 ? page.messages[0].seq : Infinity;
  for (const seq of conversation.messages.keys()) if (seq < first) conversation.messages.delete(seq);
  for (const m of page.messages) conversation.messages.set(m.seq, m);
  conversation.hasMore = page.has_more;
  conversation.loaded = true;
}

async function loadOlder() {
  const conversation = state.conversations.get(state.open);
  const oldest = Math.min(...conversation.messages.keys());
  const page = await api.get(`/v1/conversations/${conversation.conversation_id}/messages?limit=${PAGE}&before_seq=${oldest}`);
  for (const m of page.messages) conversation.messages.set(m.seq, m);
  conversation.hasMore = page.has_more;
  const box = $("messages");
  const fromBottom = box.scrollHeight - box.scrollTop;
  renderMessages();
  box.scrollTop = box.scrollHeight - fromBottom;
}

function renderChat() {
  const conversation = state.conversations.get(state.open);
  if (!conversation) return;
  $("chat-title").textContent = titleOf(conversation);
  renderChatActions();
  renderPresenceLine();
  renderMessages(true);
  renderTyping();
  renderConversations();
}

function renderPresenceLine() {
  const conversation = state.conversations.get(state.open);
  if (!conversation) return;
  if (conversation.kind === "group") {
    $("chat-presence").textContent = `${conversation.members.length} members`;
    return;
  }
  const presence = state.presence.get(others(conversation)[0]);
  $("chat-presence").textContent = presence && presence.status === "online" ? "online" : lastSeen(presence && presence.last_seen_at);
}

/** Mute / Unmute, and Block / Unblock of the other user of a direct conversation. */
function renderChatActions() {
  const conversation = state.conversations.get(state.open);
  if (!conversation) return;
  $("mute").textContent = conversation.muted ? "Unmute" : "Mute";
  const other = conversation.kind === "direct" ? others(conversation)[0] : undefined;
  $("block").hidden = !other;
  if (!other) return;
  const verb = state.blocked.has(other) ? "Unblock" : "Block";
  $("block").textContent = verb;
  $("block").setAttribute("aria-label", `${verb} ${state.users.get(other) || "this user"}`);
}

function messageState(conversation, message) {
  if (message.state) return message.state; // sending / failed
  const readBy = others(conversation).some((id) => (conversation.markers.get(id) || 0) >= message.seq);
  return readBy ? "read" : "sent";
}

function renderMessages(scrollToEnd = false) {
  const conversation = state.conversations.get(state.open);
  const box = $("messages");
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const list = $("message-list");
  list.replaceChildren();
  const messages = [...conversation.messages.values()].sort((a, b) => a.seq - b.seq);
  for (const m of [...messages, ...conversation.pending.values()]) list.append(renderMessage(conversation, m));
  $("older").hidden = !conversation.hasMore || conversation.messages.size === 0;
  if (scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
}

function renderMessage(conversation, m) {
  const mine = m.sender_id === state.me.user_id;
  if (m.system) return el("li", { class: "message system", text: `${state.users.get(m.sender_id) || "someone"} ${m.body}` });
  const classes = `message${mine ? " mine" : ""}${m.state === "failed" ? " failed" : ""}${m.hidden ? " from-blocked" : ""}`;
  const item = el("li", { class: classes, "data-message": m.client_msg_id });
  if (!mine && conversation.kind === "group") item.append(el("div", { class: "sender", text: state.users.get(m.sender_id) || "…" }));
  if (m.hidden) {
    item.append(el("div", { class: "placeholder", text: HIDDEN_TEXT }));
  } else {
    if (m.attachments && m.attachments.length > 0 && !m.deleted_at) {
      item.append(renderAttachments(api, m.attachments, { onError: (error) => showError("composer-error", error) }));
    }
    if (m.body || m.deleted_at) item.append(el("div", { class: "body", text: m.deleted_at ? "message deleted" : m.body }));
  }
  item.append(metaLine(conversation, m, mine));
  return item;
}

/** Time and, for the viewer's own messages, sent / read; on others' messages, Report (and Block in a group). */
function metaLine(conversation, m, mine) {
  const sent = m.sent_at ? time(m.sent_at) : "";
  if (mine) {
    const status = messageState(conversation, m);
    return el("div", { class: "meta", text: `${sent} · ${status}`, "data-state": status });
  }
  const reported = state.reported.has(m.message_id) ? el("span", { class: "reported", text: "Reported" }) : null;
  return el("div", { class: "meta", "data-state": "" }, reported, messageActions(conversation, m), el("span", { text: sent }));
}

function messageActions(conversation, m) {
  if (m.hidden || m.deleted_at || !m.message_id) return null;
  const actions = el("span", { class: "actions" });
  if (!state.reported.has(m.message_id)) actions.append(actionButton("Report", "Report", () => openReport(m)));
  if (conversation.kind === "group" && !state.blocked.has(m.sender_id)) {
    const label = `Block ${state.users.get(m.sender_id) || "this user"}`;
    actions.append(actionButton("Block", label, () => changeBlock(m.sender_id, true, "composer-error")));
  }
  return actions.childElementCount > 0 ? actions : null;
}

function actionButton(text, label, onClick) {
  const button = el("button", { type: "button", class: "link", text, "aria-label": label });
  button.addEventListener("click", onClick);
  return button;
}

function renderTyping() {
  const who = [...(state.typing.get(state.open) || [])].map((id) => state.users.get(id) || "someone");
  $("typing").textContent = who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.join(", ")} are typing…`;
}

function markRead(conversation) {
  if (document.visibilityState !== "visible" || state.open !== conversation.conversation_id) return;
  const newest = Math.max(0, ...conversation.messages.keys());
  if (newest > (conversation.markers.get(state.me.user_id) || 0)) {
    conversation.markers.set(state.me.user_id, newest);
    connection.send({ type: "read", conversation_id: conversation.conversation_id, seq: newest });
  }
  if (conversation.unread_count) {
    conversation.unread_count = 0;
    renderConversations();
  }
}

// ---------- sending ----------

async function send(conversation, body, attachments) {
  const local = {
    client_msg_id: crypto.randomUUID(),
    conversation_id: conversation.conversation_id,
    sender_id: state.me.user_id,
    body,
    attachments,
    state: "sending",
  };
  conversation.pending.set(local.client_msg_id, local);
  renderMessages(true);
  deliver(local);
}

async function deliver(local) {
  try {
    const frame = { type: "send", conversation_id: local.conversation_id, client_msg_id: local.client_msg_id, body: local.body };
    if (local.attachments.length > 0) frame.attachments = local.attachments.map((a) => a.id);
    const ack = await connection.send(frame, true);
    settle(ack.message);
  } catch (error) {
    if (error.code === "unavailable") return; // resent after reconnecting
    local.state = "failed";
    showError("composer-error", error);
    if (state.open === local.conversation_id) renderMessages();
  }
}

function settle(message) {
  const conversation = state.conversations.get(message.conversation_id);
  if (!conversation) return;
  conversation.pending.delete(message.client_msg_id);
  conversation.messages.set(message.seq, message);
  conversation.last_message = message;
}

function resendPending() {
  for (const conversation of state.conversations.values()) {
    for (const local of conversation.pending.values()) if (local.state === "sending") deliver(local);
  }
}

// ---------- frames ----------

async function onFrame(frame) {
  switch (frame.type) {
    case "ready":
      state.me = { ...state.me, user_id: frame.user_id };
      resendPending();
      break;
    case "message":
    case "message_edited":
    case "message_deleted":
      await onMessage(frame.message, frame.type === "message");
      break;
    case "ack":
      settle(frame.message);
      if (state.open === frame.message.conversation_id) renderMessages();
      break;
    case "read": {
      const conversation = state.conversations.get(frame.conversation_id);
      if (!conversation) break;
      const known = conversation.markers.get(frame.user_id) || 0;
      conversation.markers.set(frame.user_id, Math.max(known, frame.seq));
      if (frame.user_id === state.me.user_id) {
        conversation.unread_count = 0; // read on another device
        renderConversations();
      }
      if (state.open === frame.conversation_id) renderMessages();
      break;
    }
    case "typing": {
      const who = state.typing.get(frame.conversation_id) || new Set();
      if (frame.state === "start") who.add(frame.user_id);
      else who.delete(frame.user_id);
      state.typing.set(frame.conversation_id, who);
      await userName(frame.user_id);
      if (state.open === frame.conversation_id) renderTyping();
      break;
    }
    case "presence":
      state.presence.set(frame.user_id, frame);
      renderConversations();
      renderPresenceLine();
      break;
    default:
      break;
  }
}

async function onMessage(message, isNew) {
  const conversation = await conversationFor(message.conversation_id);
  await userName(message.sender_id);
  // Already counted: shown by the list (or an earlier frame) before this frame came.
  const seen = conversation.messages.has(message.seq) || (conversation.last_message && conversation.last_message.seq >= message.seq);
  conversation.pending.delete(message.client_msg_id);
  if (conversation.loaded || !isNew) conversation.messages.set(message.seq, message);
  conversation.last_message = newer(message, conversation.last_message);
  const fromOther = message.sender_id !== state.me.user_id && !message.system;
  if (isNew && !seen && fromOther) {
    const reading = state.open === conversation.conversation_id && document.visibilityState === "visible";
    if (!reading) conversation.unread_count = (conversation.unread_count || 0) + 1;
    const typing = state.typing.get(conversation.conversation_id);
    if (typing) typing.delete(message.sender_id);
    if (document.hidden && !message.hidden && !conversation.muted) notify(conversation, message);
  }
  renderConversations();
  if (state.open === conversation.conversation_id) {
    renderMessages();
    renderTyping();
    markRead(conversation);
  }
}

function notify(conversation, message) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const sender = state.users.get(message.sender_id) || "New message";
  const title = conversation.kind === "group" ? `${sender} in ${conversation.title}` : sender;
  const body = preview(message);
  const notification = new Notification(title, { body: body.slice(0, 200), tag: conversation.conversation_id });
  notification.onclick = () => {
    window.focus();
    openConversation(conversation.conversation_id);
  };
}

// ---------- safety: muting, blocking, reporting ----------

async function toggleMute() {
  const conversation = state.conversations.get(state.open);
  if (!conversation) return;
  const path = `/v1/conversations/${conversation.conversation_id}/mute`;
  showError("composer-error", null);
  $("mute").disabled = true;
  try {
    if (conversation.muted) await api.delete(path);
    else await api.put(path);
    conversation.muted = !conversation.muted;
  } catch (error) {
    showError("composer-error", error);
  } finally {
    $("mute").disabled = false;
  }
  renderChatActions();
  renderConversations();
}

async function loadBlocked() {
  const { blocks } = await api.get("/v1/blocks");
  state.blocked = new Map(blocks.map((b) => [b.user_id, b.blocked_at]));
  await Promise.all(blocks.map((b) => userName(b.user_id)));
  renderBlocked();
  renderChatActions();
}

function renderBlocked() {
  const list = $("blocked-list");
  list.replaceChildren();
  for (const id of state.blocked.keys()) {
    const name = state.users.get(id) || "…";
    const unblock = actionButton("Unblock", `Unblock ${name}`, () => changeBlock(id, false, "sidebar-error"));
    list.append(el("li", {}, el("span", { class: "name", text: name }), unblock));
  }
  if (state.blocked.size === 0) list.append(el("li", { class: "none", text: "Nobody is blocked." }));
}

/** Blocks or unblocks `userId`, showing a failure in the element `errorId`. */
async function changeBlock(userId, blocked, errorId) {
  showError(errorId, null);
  try {
    const path = `/v1/blocks/${encodeURIComponent(userId)}`;
    if (blocked) await api.put(path);
    else await api.delete(path);
  } catch (error) {
    showError(errorId, error);
    return;
  }
  if (blocked) state.blocked.set(userId, new Date().toISOString());
  else state.blocked.delete(userId);
  // Presence and typing do not cross a block: forget what was last known.
  state.presence.delete(userId);
  for (const typing of state.typing.values()) typing.delete(userId);
  renderBlocked();
  renderChatActions();
  renderTyping();
  await refetchShown().catch((error) => showError(errorId, error));
}

/** The server hides a blocked user's messages when they are read: read again what is shown. */
async function refetchShown() {
  for (const c of state.conversations.values()) if (c.conversation_id !== state.open) c.loaded = false;
  await loadConversations();
  const open = state.conversations.get(state.open);
  if (open && open.loaded) {
    await loadNewest(open);
    if (state.open === open.conversation_id) renderMessages();
  }
}

function openReport(message) {
  state.reporting = message;
  $("report-quote").textContent = `${state.users.get(message.sender_id) || "someone"}: ${preview(message)}`;
  $("report-reason").value = "";
  showError("report-error", null);
  $("report-dialog").showModal();
}

async function sendReport() {
  const message = state.reporting;
  if (!message) return;
  showError("report-error", null);
  $("report-send").disabled = true;
  try {
    const path = `/v1/conversations/${message.conversation_id}/messages/${message.message_id}/reports`;
    await api.post(path, { reason: $("report-reason").value });
    state.reported.add(message.message_id);
    $("report-dialog").close();
    if (state.open === message.conversation_id) renderMessages();
  } catch (error) {
    showError("report-error", error);
  } finally {
    $("report-send").disabled = false;
  }
}

// ---------- views ----------

function onConnectionState(value) {
  const text = { online: "connected", connecting: "connecting…", reconnecting: "reconnecting…", "signed-out": "signed out" }[value];
  $("connection").textContent = text;
  $("connection").dataset.state = value;
  if (value === "signed-out") showAuth();
}

function showAuth() {
  if (connection) connection.stop();
  tray.clear();
  forget();
  state.conversations.clear();
  state.blocked.clear();
  state.reported.clear();
  state.open = null;
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("auth-username").focus();
}

async function showChat() {
  const session = api.session;
  state.me = { user_id: session.user_id, username: session.username };
  state.users.set(session.user_id, session.username);
  $("me-name").textContent = session.username;
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("direct-username").focus();
  // Frames are handled one at a time, in the order they came, even when one
  // waits for the network (an unknown conversation is fetched first).
  let handled = Promise.resolve();
  const inOrder = (frame) => {
    handled = handled.then(() => onFrame(frame)).catch((error) => console.error(error));
  };
  connection = new Connection(api, { onFrame: inOrder, onState: onConnectionState });
  // Live first, then the list: a message in between is in both, and counted once.
  connection.start();
  try {
    await Promise.all([loadConversations(), loadBlocked()]);
  } catch (error) {
    showError("sidebar-error", error);
  }
}

async function findUsers(names) {
  const users = [];
  for (const name of names) {
    const user = await api.get(`/v1/users/by-username/${encodeURIComponent(name)}`).catch((error) => {
      throw new Error(error.status === 404 ? `No user called "${name}".` : error.message);
    });
    state.users.set(user.user_id, user.display_name || user.username);
    users.push(user);
  }
  return users;
}

function wire() {
  $("auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter ? event.submitter.value : "login";
    const username = $("auth-username").value.trim();
    const password = $("auth-password").value;
    if (!/^[A-Za-z0-9_.-]{3,32}$/.test(username)) return showError("auth-error", new Error("Usernames are 3–32 letters, digits, _ . or -."));
    if (password.length < 8 || password.length > 256) return showError("auth-error", new Error("Passwords are 8–256 characters."));
    showError("auth-error", null);
    if ("Notification" in window && Notification.permission === "default") Notification.requestPermission().catch(() => {});
    try {
      if (action === "register") await api.register(username, password);
      else await api.login(username, password);
      $("auth-password").value = "";
      await showChat();
    } catch (error) {
      showError("auth-error", error.status === 401 ? new Error("Wrong username or password.") : error);
    }
  });

  $("logout").addEventListener("click", async () => {
    await api.logout().catch(() => {});
    showAuth();
  });

  $("direct-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("sidebar-error", null);
    try {
      const [user] = await findUsers([$("direct-username").value.trim()]);
      const raw = await api.post("/v1/conversations", { kind: "direct", members: [user.user_id] });
      adopt(raw);
      $("direct-username").value = "";
      await openConversation(raw.conversation_id);
    } catch (error) {
      showError("sidebar-error", error);
    }
  });

  $("group-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("sidebar-error", null);
    try {
      const names = $("group-members").value.split(",").map((n) => n.trim()).filter(Boolean);
      const users = await findUsers(names);
      const raw = await api.post("/v1/conversations", { kind: "group", title: $("group-title").value.trim(), members: users.map((u) => u.user_id) });
      adopt(raw);
      $("group-title").value = "";
      $("group-members").value = "";
      await openConversation(raw.conversation_id);
    } catch (error) {
      showError("sidebar-error", error);
    }
  });

  const input = $("composer-input");
  const updateSendButton = () => ($("send").disabled = tray.busy || (input.value.trim() === "" && tray.ready.length === 0));
  tray = new Tray(api, $("attachments"), { onChange: updateSendButton, onError: (error) => showError("composer-error", error) });
  tray.listen({ button: $("attach"), picker: $("attach-input"), input, zone: $("chat") });
  input.addEventListener("input", () => {
    updateSendButton();
    showError("composer-error", null);
    const now = Date.now();
    if (input.value.trim() && now - state.typingSentAt > TYPING_REPEAT_MS && state.open) {
      state.typingSentAt = now;
      connection.send({ type: "typing", conversation_id: state.open, state: "start" });
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value.trim() === "" ? "" : input.value;
    if ((body === "" && tray.ready.length === 0) || tray.busy || !state.open) return;
    if (bytes(body) > MAX_BODY_BYTES) {
      showError("composer-error", new Error(`That message is too long (at most ${MAX_BODY_BYTES} bytes).`));
      return;
    }
    input.value = "";
    const attachments = tray.take();
    if (state.typingSentAt) {
      state.typingSentAt = 0;
      connection.send({ type: "typing", conversation_id: state.open, state: "stop" });
    }
    send(state.conversations.get(state.open), body, attachments);
  });
  updateSendButton();

  // The newest message stays in view when the list gets shorter (files attached, a narrower window).
  const box = $("messages");
  let atEnd = true;
  box.addEventListener("scroll", () => (atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80));
  new ResizeObserver(() => {
    if (atEnd) box.scrollTop = box.scrollHeight;
  }).observe(box);

  $("older").addEventListener("click", () => loadOlder().catch((error) => showError("composer-error", error)));
  $("back").addEventListener("click", () => {
    state.open = null;
    $("chat-view").classList.remove("in-chat");
    $("chat").hidden = true;
    $("empty").hidden = false;
    renderConversations();
  });
  $("mute").addEventListener("click", toggleMute);
  $("block").addEventListener("click", () => {
    const conversation = state.conversations.get(state.open);
    const [other] = conversation ? others(conversation) : [];
    if (other) changeBlock(other, !state.blocked.has(other), "composer-error");
  });
  $("blocked").addEventListener("toggle", () => {
    if ($("blocked").open) loadBlocked().catch((error) => showError("sidebar-error", error));
  });
  $("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendReport();
  });
  $("report-reason").addEventListener("input", () => showError("report-error", null));
  $("report-cancel").addEventListener("click", () => $("report-dialog").close());
  $("report-dialog").addEventListener("close", () => (state.reporting = null));
  document.addEventListener("visibilitychange", () => {
    const conversation = state.conversations.get(state.open);
    if (conversation) markRead(conversation);
  });
}

wire();
if (api.session) showChat();
else showAuth();
