// The web client: state kept from protocol v1's frames and answers, and the
// page drawn from it. Every text from the network reaches the page through
// textContent, never as HTML.

import { Api } from "./api.js";
import { Tray, describe, el, forget, renderAttachments } from "./attachments.js";
import { Connection } from "./connection.js";

const MAX_BODY_BYTES = 16384;
const PAGE = 50;
const TYPING_REPEAT_MS = 3000;

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
    const last = c.last_message ? c.last_message.body || describe(c.last_message.attachments) : "No messages yet";
    const button = el(
      "button",
      { "data-conversation": c.conversation_id, "aria-current": String(state.open === c.conversation_id) },
      dot,
      el("span", { class: "name", text: titleOf(c) }),
      badge || el("span"),
      el("span", { class: "last", text: last }),
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
  if (!conversation.loaded) {
    const full = await api.get(`/v1/conversations/${id}`);
    adopt(full);
    const page = await api.get(`/v1/conversations/${id}/messages?limit=${PAGE}`);
    for (const m of page.messages) conversation.messages.set(m.seq, m);
    conversation.hasMore = page.has_more;
    conversation.loaded = true;
  }
  renderChat();
  markRead(conversation);
  $("composer-input").focus();
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
  for (const m of [...messages, ...conversation.pending.values()]) {
    const mine = m.sender_id === state.me.user_id;
    if (m.system) {
      list.append(el("li", { class: "message system", text: `${state.users.get(m.sender_id) || "someone"} ${m.body}` }));
      continue;
    }
    const item = el("li", { class: `message${mine ? " mine" : ""}${m.state === "failed" ? " failed" : ""}`, "data-message": m.client_msg_id });
    if (!mine && conversation.kind === "group") item.append(el("div", { class: "sender", text: state.users.get(m.sender_id) || "…" }));
    if (m.attachments && m.attachments.length > 0 && !m.deleted_at) {
      item.append(renderAttachments(api, m.attachments, { onError: (error) => showError("composer-error", error) }));
    }
    if (m.body || m.deleted_at) item.append(el("div", { class: "body", text: m.deleted_at ? "message deleted" : m.body }));
    const meta = m.sent_at ? time(m.sent_at) : "";
    const status = mine ? ` · ${messageState(conversation, m)}` : "";
    item.append(el("div", { class: "meta", text: `${meta}${status}`, "data-state": mine ? messageState(conversation, m) : "" }));
    list.append(item);
  }
  $("older").hidden = !conversation.hasMore || conversation.messages.size === 0;
  if (scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
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
    if (document.hidden) notify(conversation, message);
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
  const body = message.body || describe(message.attachments);
  const notification = new Notification(title, { body: body.slice(0, 200), tag: conversation.conversation_id });
  notification.onclick = () => {
    window.focus();
    openConversation(conversation.conversation_id);
  };
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
    await loadConversations();
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
  document.addEventListener("visibilitychange", () => {
    const conversation = state.conversations.get(state.open);
    if (conversation) markRead(conversation);
  });
}

wire();
if (api.session) showChat();
else showAuth();
