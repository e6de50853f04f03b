// Drives the web client in Debian's Chromium, as people would use it: two
// users in two browser contexts plus a second tab of one of them. Started by
// tests/tests/web_client.rs, which runs the services and, when this script
// asks on stdout, stops and restarts a gateway (answering on stdin).
//
// Env: GATEWAY_A, GATEWAY_B (base URLs), SCREENSHOTS (a folder), CHROMIUM.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync, readFileSync } from "node:fs";
import { deflateSync } from "node:zlib";
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

/** A real PNG (8-bit RGB) of `width` × `height`, each pixel from `paint(x, y)` → [r, g, b]. */
function png(width, height, paint) {
  const crc32 = (bytes) => {
    let crc = 0xffffffff;
    for (const byte of bytes) {
      crc ^= byte;
      for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
    }
    return (crc ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, deflate, no filter, not interlaced
  const rows = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rows.set(paint(x, y), y * (1 + width * 3) + 1 + x * 3);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

/** A beach at sunset: sky, sun, sea and sand. */
function beach(x, y) {
  const mix = (a, b, t) => a.map((v, i) => Math.round(v + (b[i] - v) * t));
  if (Math.hypot(x - 440, y - 190) < 55) return [255, 236, 190];
  if (y < 240) return mix([250, 130, 110], [255, 205, 150], y / 240);
  if (y < 330) return (y + Math.round(8 * Math.sin(x / 23))) % 14 < 3 ? [120, 180, 215] : mix([40, 110, 170], [60, 140, 190], (y - 240) / 90);
  return mix([236, 208, 160], [214, 180, 128], (y - 330) / 90);
}

/** Waits until some image matching `selector` has loaded and decoded. */
async function imageLoaded(p, selector) {
  await p.waitForFunction((s) => [...document.querySelectorAll(s)].some((img) => img.complete && img.naturalWidth > 0), selector);
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

  step("attachments: a photo and a PDF with a caption, a pasted picture, a refused drop");
  const photo = png(640, 420, beach);
  const pdf = Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", "latin1");
  const withBob = (p) => p.locator("#conversations button", { has: p.locator(".name", { hasText: /^bob$/ }) });
  await withBob(a1).click();
  await a1.locator("#chat-title", { hasText: "bob" }).waitFor();
  // Hold the uploads on their way, to see them in progress.
  let release;
  const held = new Promise((resolve) => (release = resolve));
  const isUpload = (url) => url.pathname === "/v1/attachments";
  await a1.route(isUpload, async (route) => {
    await held;
    await route.continue();
  });
  await a1.getByLabel("Message", { exact: true }).fill("the beach, and the report");
  const chooser = a1.waitForEvent("filechooser");
  await a1.getByRole("button", { name: "Attach files" }).click();
  await (await chooser).setFiles([
    { name: "beach.png", mimeType: "image/png", buffer: photo },
    { name: "Q3 report.pdf", mimeType: "application/pdf", buffer: pdf },
  ]);
  await a1.locator("#attachments .chip", { hasText: "beach.png" }).locator("progress").waitFor();
  await a1.locator("#attachments .chip", { hasText: "Q3 report.pdf" }).locator("progress").waitFor();
  assert.equal(await a1.locator("#send").isDisabled(), true, "no sending while files upload");
  release();
  await a1.locator("#attachments .chip.ready", { hasText: "beach.png" }).waitFor();
  await a1.locator("#attachments .chip.ready", { hasText: "Q3 report.pdf" }).waitFor();
  await a1.unroute(isUpload);
  assert.equal(await a1.locator("#attachments progress").count(), 0);
  assert.equal(await a1.locator("#send").isDisabled(), false);
  await a1.getByRole("button", { name: "Send" }).click();
  await a1.locator("#attachments").waitFor({ state: "hidden" });
  await a1.locator(".message.mine", { hasText: "the beach, and the report" }).locator(".meta[data-state=sent], .meta[data-state=read]").waitFor();

  // Bob sees the preview (BlurHash first, then the thumbnail), the caption and the PDF.
  const received = b1.locator(".message", { hasText: "the beach, and the report" });
  await received.waitFor();
  const preview = received.locator(".attachment-image");
  await preview.waitFor();
  await imageLoaded(b1, "#message-list .attachment-image img.thumbnail");
  const box = await preview.boundingBox();
  assert.ok(Math.abs(box.width - 240) <= 1 && Math.abs(box.height - 158) <= 2, `previews are capped at 240px wide: ${JSON.stringify(box)}`);
  const blurred = await preview.locator("canvas.blurhash").evaluate((canvas) => {
    const [r, g, b, a] = canvas.getContext("2d").getImageData(16, 4, 1, 1).data;
    return { r, g, b, a };
  });
  assert.ok(blurred.a === 255 && blurred.r > 180 && blurred.b < blurred.r, `the BlurHash paints a warm sky: ${JSON.stringify(blurred)}`);
  const file = received.getByRole("button", { name: /^Download Q3 report\.pdf, \d+ B$/ });
  await file.waitFor();
  assert.equal(await file.locator(".name").textContent(), "Q3 report.pdf");
  assert.equal(await received.locator(".body").textContent(), "the beach, and the report");
  await b1.screenshot({ path: `${shots}/attachments.png`, animations: "disabled" });

  const [download] = await Promise.all([b1.waitForEvent("download"), file.click()]);
  assert.equal(download.suggestedFilename(), "Q3 report.pdf");
  assert.ok(readFileSync(await download.path()).equals(pdf), "the PDF downloads byte for byte");

  await preview.click();
  await b1.locator("dialog.viewer img.full[data-full=true]").waitFor();
  await imageLoaded(b1, "dialog.viewer img.full[data-full=true]");
  assert.equal(await b1.locator("dialog.viewer img.full").evaluate((img) => img.naturalWidth), 640, "the full image opens");
  await b1.getByRole("button", { name: "Close" }).click();
  await b1.locator("dialog.viewer").waitFor({ state: "hidden" });

  // A picture pasted into the composer (drawn in the page), sent without a caption.
  await b1.evaluate(async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 300;
    canvas.height = 400;
    const g = canvas.getContext("2d");
    g.fillStyle = "#2e7d32";
    g.fillRect(0, 0, 300, 400);
    g.fillStyle = "#ffd54f";
    g.beginPath();
    g.arc(150, 200, 90, 0, 2 * Math.PI);
    g.fill();
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const data = new DataTransfer();
    data.items.add(new File([blob], "image.png", { type: "image/png" }));
    const event = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
    document.getElementById("composer-input").dispatchEvent(event);
  });
  await b1.locator("#attachments .chip.ready", { hasText: "image.png" }).waitFor();
  await b1.getByLabel("Message", { exact: true }).press("Enter");
  const pasted = a1.locator("#message-list .message:not(.mine)").last();
  await pasted.locator(".attachment-image").waitFor();
  await imageLoaded(a1, "#message-list .message:not(.mine):last-child .attachment-image img.thumbnail");
  assert.equal(await pasted.locator(".body").count(), 0, "no empty text under a picture alone");
  assert.equal(await pasted.locator(".attachment-image").getAttribute("aria-label"), "Open image.png");
  await withBob(a1).locator(".last", { hasText: "Photo" }).waitFor();

  // Files dropped on the conversation: one the server refuses (its reason is shown), one removed
  // again, whose name looks like HTML and shows as typed.
  const notes = `<img src=x onerror="window.__pwned = 3">notes.txt`;
  await a1.evaluate((notes) => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array([0, 1, 2, 0xfe, 0xff, 0x80, 0x81])], "data.bin"));
    data.items.add(new File(["remember the sunscreen\n"], notes, { type: "text/plain" }));
    const zone = document.getElementById("messages");
    for (const type of ["dragenter", "dragover", "drop"]) {
      zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
    }
  }, notes);
  await a1.locator("#composer-error", { hasText: 'Could not attach "data.bin": ' }).waitFor();
  assert.match(await a1.locator("#composer-error").textContent(), /no allowed type/);
  await a1.locator("#attachments .chip.ready", { hasText: "notes.txt" }).waitFor();
  assert.equal(await a1.locator("#attachments .chip").count(), 1, "the refused file is not kept");
  assert.equal(await a1.locator("#attachments .chip .name").textContent(), notes);
  assert.equal(await a1.locator("#attachments img").count(), 0);
  assert.equal(await a1.evaluate(() => window.__pwned), undefined, "nothing ran");
  assert.equal(await a1.locator("#send").isDisabled(), false, "a file alone may be sent");
  await a1.getByRole("button", { name: `Remove ${notes}` }).click();
  await a1.locator("#attachments").waitFor({ state: "hidden" });
  assert.equal(await a1.locator("#send").isDisabled(), true);

  step("mute and unmute a conversation");
  await a1.locator("#chat-title", { hasText: "bob" }).waitFor();
  await a1.getByRole("button", { name: "Mute", exact: true }).click();
  await a1.locator("#mute", { hasText: /^Unmute$/ }).waitFor();
  await withBob(a1).locator(".muted-flag", { hasText: "muted" }).waitFor();
  await a2.reload(); // the flag comes from the server
  await a2.locator("#connection[data-state=online]").waitFor();
  await withBob(a2).locator(".muted-flag", { hasText: "muted" }).waitFor();
  await a1.getByRole("button", { name: "Unmute", exact: true }).click();
  await a1.locator("#mute", { hasText: /^Mute$/ }).waitFor();
  await withBob(a1).locator(".muted-flag").waitFor({ state: "detached" });

  step("report bob's message: the server's refusal, then 'Reported'");
  await send(b1, "buy cheap watches");
  const spam = a1.locator("#message-list .message", { hasText: "buy cheap watches" });
  await spam.waitFor();
  assert.equal(await a1.locator("#message-list .message.mine").getByRole("button", { name: "Report", exact: true }).count(), 0, "no reporting one's own messages");
  await spam.getByRole("button", { name: "Report", exact: true }).click();
  const report = a1.getByRole("dialog", { name: "Report message" });
  await report.waitFor();
  await report.getByLabel("Reason").fill("   ");
  await report.getByRole("button", { name: "Send report" }).click();
  await report.locator(".error", { hasText: "reason must be 1 to 1000 characters" }).waitFor();
  await report.getByLabel("Reason").fill("spam");
  await a1.screenshot({ path: `${shots}/report.png`, animations: "disabled" });
  await report.getByRole("button", { name: "Send report" }).click();
  await report.waitFor({ state: "hidden" });
  await spam.locator(".reported", { hasText: "Reported" }).waitFor();
  assert.equal(await spam.getByRole("button", { name: "Report", exact: true }).count(), 0, "reported once");

  step("alice blocks bob: his new message arrives hidden, and is not notified");
  await a1.locator("#block").click();
  await a1.locator("#block[aria-label='Unblock bob']", { hasText: /^Unblock$/ }).waitFor();
  // Pages are read again: what bob sent shows hidden too.
  await spam.waitFor({ state: "detached" });
  await send(a1, "I am blocking you");
  await messages(b1, "I am blocking you").waitFor();
  await send(b1, "can you see this?");
  await b1.locator(".meta[data-state=sending]").waitFor({ state: "detached" });
  await withBob(a1).locator(".last", { hasText: "Message from a blocked user" }).waitFor();
  const newest = a1.locator("#message-list li").last();
  await newest.locator(".placeholder", { hasText: "Message from a blocked user" }).waitFor();
  assert.match(await newest.getAttribute("class"), /from-blocked/);
  assert.equal(await newest.locator(".body, .attachments").count(), 0, "no body, no files");
  assert.equal(await newest.getByRole("button").count(), 0, "nothing to do with a hidden message");
  assert.equal(await a1.getByText("can you see this?").count(), 0);
  await withBob(hidden).locator(".last", { hasText: "Message from a blocked user" }).waitFor();
  const shown = await hidden.evaluate(() => window.__shown.map((n) => n.body));
  assert.ok(!shown.includes("can you see this?") && !shown.includes("Message from a blocked user"), `not notified: ${JSON.stringify(shown)}`);

  step("the blocked users list; unblocking shows bob's messages again");
  await a1.getByText("Blocked users", { exact: true }).click();
  const blocked = a1.getByRole("list", { name: "Blocked users" });
  await blocked.locator("li", { hasText: "bob" }).waitFor();
  await a1.mouse.move(0, 0);
  await a1.screenshot({ path: `${shots}/safety.png`, animations: "disabled" });
  await blocked.getByRole("button", { name: "Unblock bob", exact: true }).click();
  await blocked.locator("li", { hasText: "Nobody is blocked." }).waitFor();
  await a1.locator("#block[aria-label='Block bob']", { hasText: /^Block$/ }).waitFor();
  await messages(a1, "can you see this?").waitFor();
  await send(b1, "friends again?");
  await messages(a1, "friends again?").waitFor();
  assert.equal(await a1.locator("#message-list .from-blocked").count(), 0, "nothing hidden any more");

  console.log("DONE");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode || 0);
}
