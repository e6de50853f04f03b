// Attachments: uploads with progress (XMLHttpRequest: fetch reports none),
// the tray of files waiting to be sent, a BlurHash decoder for placeholders,
// and files in messages. Files need the Bearer token, which an <img> or a
// link cannot send: they are fetched with it and shown through blob: URLs.
// Names from the network reach the page through textContent and attributes.

import { ApiError } from "./api.js";

const MAX_FILES = 10; // per message
const PREVIEW_WIDTH = 240;
const PREVIEW_HEIGHT = 320;
const PLACEHOLDER = 32; // BlurHash canvas, stretched by CSS
// Only the gateway's own file URLs get the token.
const FILE_URL = /^\/v1\/attachments\/[0-9A-Fa-f-]{36}\/(content|thumbnail)$/;
// Pauses before trying again an upload or a file answered 503 ("retry
// shortly"), or a fetch that failed on the network. (A file of a message that
// arrived live is readable at once: the server waits until it is stored.)
const UPLOAD_RETRY_MS = [500, 1500];
const FETCH_RETRY_MS = [500, 1000, 2000, 4000];

/** A DOM element with properties (`text` is its textContent) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("aria-") || key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function humanSize(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const isImage = (a) => Boolean(a.thumbnail_url && a.width > 0 && a.height > 0);

/** `attempt()`, again after each pause of `pauses` while it fails with an error `worthRetrying`. */
async function retrying(attempt, pauses, worthRetrying) {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (error) {
      if (i >= pauses.length || !worthRetrying(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, pauses[i]));
    }
  }
}

/** A line for the conversation list or a notification of a message without text. */
export function describe(attachments = []) {
  if (attachments.length === 0) return "";
  if (attachments.every(isImage)) return attachments.length === 1 ? "Photo" : `${attachments.length} photos`;
  return attachments.length === 1 ? attachments[0].name : `${attachments.length} files`;
}

// ---------- uploading ----------

/** One POST of the file; on 401, once more after refreshing the token. */
function post(api, file, onProgress, signal, retried = false) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/attachments?name=${encodeURIComponent(file.name || "file")}`);
    const session = api.session;
    if (session) xhr.setRequestHeader("Authorization", `Bearer ${session.access_token}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = async () => {
      if (xhr.status === 401 && session && !retried && (await api.refresh())) {
        post(api, file, onProgress, signal, true).then(resolve, reject);
        return;
      }
      const data = xhr.response;
      if (xhr.status === 201 && data && data.id) return resolve(data);
      const error = data && data.error ? data.error : { code: "unavailable", message: `HTTP ${xhr.status}` };
      reject(new ApiError(xhr.status, error.code, error.message));
    };
    xhr.onerror = () => reject(new ApiError(0, "unavailable", "The server cannot be reached."));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
    if (signal.aborted) return xhr.onabort();
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}

/** Uploads one file; resolves with the attachment, rejects with an ApiError (code "aborted" when cancelled). */
export function upload(api, file, { onProgress = () => {}, signal = new AbortController().signal } = {}) {
  const attempt = () => {
    onProgress(0);
    return post(api, file, onProgress, signal);
  };
  return retrying(attempt, UPLOAD_RETRY_MS, (error) => error.status === 503 && !signal.aborted);
}

/** The files waiting to be sent: each uploads at once and shows as a chip in `list`. */
export class Tray {
  constructor(api, list, { onChange, onError }) {
    this.api = api;
    this.list = list;
    this.onChange = onChange;
    this.onError = onError;
    this.items = [];
    list.hidden = true;
  }

  /** Attach files from a file input, the clipboard or a drop. */
  add(files) {
    this.onError(null);
    for (const file of files) {
      if (this.items.length >= MAX_FILES) {
        this.onError(new Error(`A message carries at most ${MAX_FILES} files.`));
        break;
      }
      const item = { file, attachment: null, controller: new AbortController() };
      const bar = el("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
      const remove = el("button", { type: "button", class: "remove", text: "×", "aria-label": `Remove ${file.name}` });
      remove.addEventListener("click", () => this.remove(item));
      item.chip = el("li", { class: "chip uploading", title: file.name }, el("span", { class: "name", text: file.name }), bar, remove);
      this.items.push(item);
      this.list.append(item.chip);
      upload(this.api, file, { signal: item.controller.signal, onProgress: (done) => (bar.value = done) }).then(
        (attachment) => {
          item.attachment = attachment;
          bar.remove();
          item.chip.classList.replace("uploading", "ready");
          item.chip.insertBefore(el("span", { class: "size", text: humanSize(attachment.size) }), remove);
          this.changed();
        },
        (error) => {
          if (!this.items.includes(item)) return; // removed meanwhile
          this.remove(item);
          if (error.code !== "aborted") this.onError(new Error(`Could not attach "${file.name}": ${error.message}`));
        },
      );
    }
    this.changed();
  }

  remove(item) {
    item.controller.abort();
    this.items = this.items.filter((other) => other !== item);
    item.chip.remove();
    this.changed();
  }

  /** Some file is still uploading. */
  get busy() {
    return this.items.some((item) => !item.attachment);
  }

  /** The uploaded attachments, in the order they were added. */
  get ready() {
    return this.items.filter((item) => item.attachment).map((item) => item.attachment);
  }

  /** The uploaded attachments, emptying the tray. */
  take() {
    const ready = this.ready;
    this.clear();
    return ready;
  }

  clear() {
    for (const item of this.items) item.controller.abort();
    this.items = [];
    this.list.replaceChildren();
    this.changed();
  }

  changed() {
    this.list.hidden = this.items.length === 0;
    this.onChange();
  }

  /** Files come from `button` (opening the file input `picker`), pasted into `input`, or dropped onto `zone`. */
  listen({ button, picker, input, zone }) {
    button.addEventListener("click", () => picker.click());
    picker.addEventListener("change", () => {
      this.add([...picker.files]);
      picker.value = "";
    });
    input.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData ? event.clipboardData.files : [])];
      if (files.length === 0) return;
      event.preventDefault();
      this.add(files);
    });
    const carriesFiles = (event) => Boolean(event.dataTransfer) && [...event.dataTransfer.types].includes("Files");
    zone.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.classList.remove("dropping");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dropping");
      if (!carriesFiles(event)) return;
      event.preventDefault();
      this.add([...event.dataTransfer.files]);
    });
    // A file dropped anywhere else must not replace the page with itself.
    for (const type of ["dragover", "drop"]) {
      document.addEventListener(type, (event) => {
        if (carriesFiles(event)) event.preventDefault();
      });
    }
  }
}

// ---------- BlurHash (https://github.com/woltapp/blurhash, decoding) ----------

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

function base83(text) {
  let value = 0;
  for (const char of text) {
    const digit = DIGITS.indexOf(char);
    if (digit < 0) throw new Error("not a BlurHash");
    value = value * 83 + digit;
  }
  return value;
}

function toLinear(value) {
  const v = value / 255;
  return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
}

function toSrgb(value) {
  const v = Math.min(1, Math.max(0, value));
  return Math.round((v <= 0.0031308 ? v * 12.92 : 1.055 * v ** (1 / 2.4) - 0.055) * 255);
}

/** RGBA pixels (width × height) of a BlurHash, or null when it is not one. */
export function decodeBlurHash(hash, width, height, punch = 1) {
  if (typeof hash !== "string" || hash.length < 6) return null;
  try {
    const size = base83(hash[0]);
    const nx = (size % 9) + 1;
    const ny = Math.floor(size / 9) + 1;
    if (hash.length !== 4 + 2 * nx * ny) return null;
    const maximum = ((base83(hash[1]) + 1) / 166) * punch;
    // The average colour (DC), then nx × ny - 1 cosine components (AC), each 19 levels per channel.
    const dc = base83(hash.slice(2, 6));
    const colours = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
    for (let i = 1; i < nx * ny; i++) {
      const ac = base83(hash.slice(4 + i * 2, 6 + i * 2));
      colours.push([Math.floor(ac / 361), Math.floor(ac / 19) % 19, ac % 19].map((q) => {
        const v = (q - 9) / 9;
        return Math.sign(v) * v * v * maximum;
      }));
    }
    const cosX = (x, i) => Math.cos((Math.PI * x * i) / width);
    const cosY = (y, j) => Math.cos((Math.PI * y * j) / height);
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let r = 0;
        let g = 0;
        let b = 0;
        for (let j = 0; j < ny; j++) {
          for (let i = 0; i < nx; i++) {
            const basis = cosX(x, i) * cosY(y, j);
            const colour = colours[i + j * nx];
            r += colour[0] * basis;
            g += colour[1] * basis;
            b += colour[2] * basis;
          }
        }
        const at = 4 * (x + y * width);
        pixels.set([toSrgb(r), toSrgb(g), toSrgb(b), 255], at);
      }
    }
    return pixels;
  } catch {
    return null;
  }
}

function placeholder(hash) {
  const pixels = decodeBlurHash(hash, PLACEHOLDER, PLACEHOLDER);
  if (!pixels) return null;
  const canvas = el("canvas", { class: "blurhash", width: PLACEHOLDER, height: PLACEHOLDER, "aria-hidden": "true" });
  const context = canvas.getContext("2d");
  const image = context.createImageData(PLACEHOLDER, PLACEHOLDER);
  image.data.set(pixels);
  context.putImageData(image, 0, 0);
  return canvas;
}

// ---------- fetching with the token ----------

// Thumbnails, fetched once each, until signing out: url → { promise, objectUrl }.
const thumbnails = new Map();

/** A file's bytes, fetched with the token. */
function fetchFile(api, url) {
  if (!FILE_URL.test(url)) return Promise.reject(new ApiError(0, "invalid_argument", "That is not a file of this server."));
  return retrying(() => api.blob(url), FETCH_RETRY_MS, (error) => [0, 503].includes(error.status));
}

function thumbnail(api, url) {
  let entry = thumbnails.get(url);
  if (!entry) {
    entry = { objectUrl: null };
    entry.promise = fetchFile(api, url).then(
      (blob) => (entry.objectUrl = URL.createObjectURL(blob)),
      (error) => {
        thumbnails.delete(url); // tried again when next drawn
        throw error;
      },
    );
    thumbnails.set(url, entry);
  }
  return entry;
}

/** Lets go of every fetched thumbnail (on signing out). */
export function forget() {
  for (const entry of thumbnails.values()) if (entry.objectUrl) URL.revokeObjectURL(entry.objectUrl);
  thumbnails.clear();
  previews.clear();
}

async function download(api, attachment, button, onError) {
  button.setAttribute("aria-busy", "true");
  try {
    const blob = await fetchFile(api, attachment.url);
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: attachment.name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    onError(new Error(`Could not download "${attachment.name}": ${error.message}`));
  } finally {
    button.removeAttribute("aria-busy");
  }
}

// ---------- the full image, in an overlay ----------

let viewer = null;

function viewerDialog() {
  if (viewer) return viewer;
  const image = el("img", { class: "full", alt: "" });
  const name = el("span", { class: "name" });
  const save = el("a", { class: "save", text: "Download" });
  const close = el("button", { type: "button", class: "secondary", text: "Close" });
  const dialog = el("dialog", { class: "viewer", "aria-label": "Image" }, image, el("div", { class: "viewer-bar" }, name, save, close));
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // the backdrop
  });
  dialog.addEventListener("close", () => {
    if (viewer.objectUrl) URL.revokeObjectURL(viewer.objectUrl);
    viewer.objectUrl = null;
    viewer.showing = null;
    image.removeAttribute("src");
    save.removeAttribute("href");
  });
  document.body.append(dialog);
  viewer = { dialog, image, name, save, objectUrl: null, showing: null };
  return viewer;
}

async function view(api, attachment, preview, onError) {
  const v = viewerDialog();
  v.showing = attachment;
  v.dialog.setAttribute("aria-label", attachment.name);
  v.image.alt = attachment.name;
  v.image.dataset.full = "false";
  if (preview) v.image.src = preview;
  v.name.textContent = `${attachment.name} · ${humanSize(attachment.size)}`;
  v.save.download = attachment.name;
  v.dialog.showModal();
  try {
    const blob = await fetchFile(api, attachment.url);
    if (v.showing !== attachment) return;
    v.objectUrl = URL.createObjectURL(blob);
    v.image.src = v.objectUrl;
    v.image.dataset.full = "true";
    v.save.href = v.objectUrl;
  } catch (error) {
    if (v.showing === attachment) v.dialog.close();
    onError(new Error(`Could not open "${attachment.name}": ${error.message}`));
  }
}

// ---------- files in messages ----------

// Each preview is built once and moved into the list each time it is drawn
// again, so a loaded image neither reloads nor flickers: attachment id → node.
const previews = new Map();

function imagePreview(api, attachment, onError) {
  if (previews.has(attachment.id)) return previews.get(attachment.id);
  const scale = Math.min(1, PREVIEW_WIDTH / attachment.width, PREVIEW_HEIGHT / attachment.height);
  const width = Math.max(1, Math.round(attachment.width * scale));
  const height = Math.max(1, Math.round(attachment.height * scale));
  const button = el("button", { type: "button", class: "attachment-image", title: attachment.name, "aria-label": `Open ${attachment.name}` });
  // Sized before anything loads, so the list does not jump.
  button.style.width = `${width}px`;
  button.style.aspectRatio = `${width} / ${height}`;
  const image = el("img", { class: "thumbnail", alt: attachment.name, width, height });
  image.addEventListener("load", () => button.classList.add("loaded"));
  // The placeholder shows until the thumbnail has loaded (CSS hides it once the image has faded in).
  const canvas = attachment.blurhash ? placeholder(attachment.blurhash) : null;
  if (canvas) button.append(canvas);
  const entry = thumbnail(api, attachment.thumbnail_url);
  entry.promise.then(
    (url) => (image.src = url),
    () => {
      button.classList.add("broken");
      previews.delete(attachment.id); // built and fetched again when next drawn
    },
  );
  button.append(image);
  button.addEventListener("click", () => view(api, attachment, image.currentSrc, onError));
  previews.set(attachment.id, button);
  return button;
}

function fileEntry(api, attachment, onError) {
  const extension = /\.([A-Za-z0-9]{1,5})$/.exec(attachment.name);
  const kind = extension ? extension[1].toUpperCase() : "FILE";
  const size = humanSize(attachment.size);
  const button = el(
    "button",
    { type: "button", class: "attachment-file", title: `Download ${attachment.name}`, "aria-label": `Download ${attachment.name}, ${size}` },
    el("span", { class: "kind", text: kind, "aria-hidden": "true" }),
    el("span", { class: "name", text: attachment.name }),
    el("span", { class: "size", text: size }),
  );
  button.addEventListener("click", () => download(api, attachment, button, onError));
  return button;
}

/** The files of a message: images as previews, anything else as a download. */
export function renderAttachments(api, attachments, { onError }) {
  const box = el("div", { class: "attachments" });
  for (const attachment of attachments) {
    box.append(isImage(attachment) ? imagePreview(api, attachment, onError) : fileEntry(api, attachment, onError));
  }
  return box;
}
