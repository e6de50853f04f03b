// Drives the web client in Debian's Chromium, as people would use it: two
// users in two browser contexts plus a second tab of one of them. Started by
// tests/tests/web_client.rs, which runs the services and, when this script
// asks on stdout, stops and restarts a gateway (answering on stdin).
//
// Env: GATEWAY_A, GATEWAY_B (base URLs), SCREENSHOTS (a folder), CHROMIUM.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const A = process.env.GATEWAY_A;
const B = process.env.GATEWAY_B;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });
const TIMEOUT = 15000;

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(command, answer) {
  console.log(command);
  const line = await replies.next();
  assert.equal(line.value, answer, `the driver answers ${command}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
const step = (name) => console.error(`# ${name}`);

async function page(context, base) {
  const p = await context.newPage();
  p.setDefaultTimeout(TIMEOUT);
  p.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  p.on("dialog", async (dialog) => {
    await dialog.dismiss();
    throw new Error(`a dialog opened: ${dialog.message()}`);
  });
  await p.goto(base);
  return p;
}

async function signIn(p, username, action) {
  await p.getByLabel("Username", { exact: true }).fill(username);
  await p.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await p.getByRole("button", { name: action }).click();
  await p.locator("#me-name", { hasText: username }).waitFor();
  await p.locator("#connection[data-state=online]").waitFor();
}

const conversationButton = (p) => p.locator("#conversations button").first();
const messages = (p, text) => p.locator("#message-list .body", { hasText: text });

async function send(p, text) {
  await p.getByLabel("Message", { exact: true }).fill(text);
  await p.getByLabel("Message", { exact: true }).press("Enter");
}

try {
  const alice = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const bob = await browser.newContext({ viewport: { width: 1100, height: 720 } });

  step("register, log in, a second tab");
  const a1 = await page(alice, A);
  await a1.screenshot({ path: `${shots}/login.png` });
  await signIn(a1, "alice", "Create account");
  let b1 = await page(bob, B);
  await signIn(b1, "bob", "Create account");
  const a2 = await page(alice, A);
  await signIn(a2, "alice", "Log in");

  step("alice starts a chat with bob; the message reaches all three pages");
  await a1.getByLabel("Chat with").fill("bob");
  await a1.getByRole("button", { name: "Start" }).click();
  await a1.locator("#chat-title", { hasText: "bob" }).waitFor();
  await send(a1, "hello bob");
  await messages(a1, "hello bob").waitFor();
  await a1.locator(".message.mine .meta[data-state=sent]").waitFor();
  await conversationButton(b1).locator(".badge", { hasText: "1" }).waitFor();
  await conversationButton(a2).locator(".last", { hasText: "hello bob" }).waitFor();
  await send(a1, "are you there?");
  await conversationButton(b1).locator(".badge", { hasText: "2" }).waitFor();

  step("bob reads: his badge clears, alice sees 'read'");
  await conversationButton(b1).click();
  await messages(b1, "are you there?").waitFor();
  await conversationButton(b1).locator(".badge").waitFor({ state: "detached" });
  await a1.locator(".message.mine .meta[data-state=read]").last().waitFor();

  step("typing shows and clears");
  await b1.getByLabel("Message", { exact: true }).pressSequentially("hi al", { delay: 30 });
  await a1.locator("#typing", { hasText: "bob is typing" }).waitFor();
  await b1.getByLabel("Message", { exact: true }).press("Enter");
  await messages(a1, "hi al").waitFor();
  await a1.locator("#typing", { hasText: /^$/ }).waitFor();
  await conversationButton(a2).click();
  await messages(a2, "hi al").waitFor();
  await a1.screenshot({ path: `${shots}/chat.png` });

  step("presence: bob's dot goes grey when he closes his page");
  const dot = conversationButton(a1).locator(".dot");
  await conversationButton(a1).locator(".dot.online").waitFor();
  await b1.close();
  await conversationButton(a1).locator(".dot:not(.online)").waitFor();
  assert.match(await dot.getAttribute("aria-label"), /last seen/);
  b1 = await page(bob, B);
  await signIn(b1, "bob", "Log in");
  await conversationButton(a1).locator(".dot.online").waitFor();
  await conversationButton(b1).click();

  step("gateway A restarts; both alice tabs come back and miss nothing");
  await ask("STOP_GATEWAY_A", "STOPPED");
  await a1.locator("#connection[data-state=reconnecting]").waitFor();
  for (const text of ["while away 1", "while away 2", "while away 3"]) {
    await send(b1, text);
    await b1.locator(".meta[data-state=sending]").waitFor({ state: "detached" });
  }
  await ask("START_GATEWAY_A", "STARTED");
  for (const p of [a1, a2]) {
    await p.locator("#connection[data-state=online]").waitFor({ timeout: 30000 });
    for (const text of ["while away 1", "while away 2", "while away 3"]) {
      await messages(p, text).waitFor();
      assert.equal(await messages(p, text).count(), 1, `"${text}" shown once`);
    }
  }

  step("bad input is refused or shown as text");
  const input = a1.getByLabel("Message", { exact: true });
  await input.fill("   ");
  assert.equal(await a1.locator("#send").isDisabled(), true, "no sending whitespace");
  const before = await a1.locator("#message-list li").count();
  await input.press("Enter");
  await input.fill("x".repeat(16385));
  await input.press("Enter");
  await a1.locator("#composer-error", { hasText: "too long" }).waitFor();
  assert.equal(await a1.locator("#message-list li").count(), before, "nothing sent");
  const evil = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> <b>bold</b>`;
  await send(a1, evil);
  await messages(b1, "<script>").waitFor();
  for (const p of [a1, b1]) {
    assert.equal(await messages(p, "<script>").textContent(), evil, "shown exactly as typed");
    assert.equal(await p.evaluate(() => window.__pwned), undefined, "nothing ran");
    assert.equal(await p.locator("#message-list img, #message-list script, #message-list b").count(), 0);
  }

  step("keyboard only, at phone width");
  const phone = await alice.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  phone.setDefaultTimeout(TIMEOUT);
  await phone.goto(A);
  await phone.screenshot({ path: `${shots}/phone-login.png` });
  // The username field has focus; everything from here is typed.
  await phone.keyboard.type("alice");
  await phone.keyboard.press("Tab");
  await phone.keyboard.type("correct horse battery");
  await phone.keyboard.press("Enter");
  await phone.locator("#connection[data-state=online]").waitFor();
  await phone.locator("#direct-username:focus").waitFor();
  await phone.keyboard.type("bob");
  await phone.keyboard.press("Enter");
  await messages(phone, "while away 3").waitFor();
  assert.equal(await phone.locator(".sidebar").isVisible(), false, "the chat takes the whole width");
  await phone.keyboard.type("typed on a phone");
  await phone.keyboard.press("Enter");
  await messages(b1, "typed on a phone").waitFor();
  await phone.screenshot({ path: `${shots}/phone-chat.png` });
  await phone.getByRole("button", { name: "Back to conversations" }).click();
  await conversationButton(phone).waitFor();
  await phone.screenshot({ path: `${shots}/phone-list.png` });

  step("scroll-back paging");
  const login = await fetch(`${B}/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: "bob", password: "correct horse battery" }),
  }).then((r) => r.json());
  const conversation = await conversationButton(phone).getAttribute("data-conversation");
  for (let i = 1; i <= 55; i++) {
    const sent = await fetch(`${B}/v1/conversations/${conversation}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${login.access_token}` },
      body: JSON.stringify({ client_msg_id: `page-${i}`, body: `page ${i}` }),
    });
    assert.equal(sent.status, 201);
  }
  const fresh = await bob.newPage();
  fresh.setDefaultTimeout(TIMEOUT);
  await fresh.goto(B);
  await signIn(fresh, "bob", "Log in");
  await conversationButton(fresh).click();
  await messages(fresh, "page 55").waitFor();
  assert.equal(await messages(fresh, "hello bob").count(), 0, "only the newest page at first");
  await fresh.getByRole("button", { name: "Load older messages" }).click();
  await messages(fresh, "hello bob").waitFor();
  await fresh.getByRole("button", { name: "Load older messages" }).waitFor({ state: "hidden" });

  step("a group");
  await fresh.getByText("New group").click();
  await fresh.getByLabel("Group name").fill("weekend plans");
  await fresh.getByLabel("Members (usernames, comma-separated)").fill("alice");
  await fresh.getByRole("button", { name: "Create group" }).click();
  await fresh.locator("#chat-title", { hasText: "weekend plans" }).waitFor();
  await send(fresh, "who brings snacks?");
  const group = a1.locator("#conversations button", { hasText: "weekend plans" });
  await group.locator(".badge", { hasText: "1" }).waitFor();
  await group.click();
  await messages(a1, "who brings snacks?").waitFor();
  await a1.locator("#message-list .sender", { hasText: "bob" }).first().waitFor();
  await a1.locator("#chat-presence", { hasText: "2 members" }).waitFor();

  step("a desktop notification while the tab is hidden");
  const hidden = await alice.newPage();
  hidden.setDefaultTimeout(TIMEOUT);
  await hidden.addInitScript(() => {
    // A tab in the background, with notifications allowed; record what it shows.
    Object.defineProperty(document, "hidden", { get: () => true });
    Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
    window.__shown = [];
    window.Notification = class {
      static permission = "granted";
      static requestPermission() {
        return Promise.resolve("granted");
      }
      constructor(title, options) {
        window.__shown.push({ title, body: options.body });
      }
    };
  });
  await hidden.goto(A);
  await signIn(hidden, "alice", "Log in");
  await send(fresh, "look at this");
  await hidden.waitForFunction(() => window.__shown.length > 0);
  assert.deepEqual(await hidden.evaluate(() => window.__shown), [{ title: "bob in weekend plans", body: "look at this" }]);

  console.log("DONE");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode || 0);
}
