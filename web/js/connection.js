// The WebSocket half of protocol v1: authenticates with the first frame (a
// browser cannot set headers), keeps the cursor of the last event handled so
// a reconnect catches up exactly what was missed, reconnects with backoff and
// answers `req` frames with promises.

const CURSOR_KEY = "chat.cursor";
const MAX_BACKOFF_MS = 15000;

export class Connection {
  constructor(api, { onFrame, onState }) {
    this.api = api;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.nextReq = 1;
    this.waiting = new Map();
    this.attempt = 0;
    this.stopped = false;
    this.ready = false;
  }

  get cursor() {
    return window.sessionStorage.getItem(CURSOR_KEY);
  }

  set cursor(value) {
    if (value) window.sessionStorage.setItem(CURSOR_KEY, value);
    else window.sessionStorage.removeItem(CURSOR_KEY);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.cursor = null;
    if (this.ws) this.ws.close(1000);
  }

  connect() {
    const session = this.api.session;
    if (!session || this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ws`);
    this.ws = ws;
    this.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    ws.onopen = () => {
      const auth = { type: "auth", token: this.api.session.access_token };
      if (this.cursor) auth.cursor = this.cursor;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  handle(frame) {
    if (frame.type === "ready") {
      this.ready = true;
      this.attempt = 0;
      if (!this.cursor) this.cursor = frame.cursor;
      this.onState("online");
    }
    if ((frame.type === "ack" || frame.type === "error" || frame.type === "pong" || frame.type === "synced") && frame.req !== undefined) {
      const waiter = this.waiting.get(frame.req);
      if (waiter) {
        this.waiting.delete(frame.req);
        if (frame.type === "error") waiter.reject(frame);
        else waiter.resolve(frame);
      }
    }
    this.onFrame(frame);
    if (frame.cursor && ["message", "message_edited", "message_deleted", "synced"].includes(frame.type)) {
      this.cursor = frame.cursor;
    }
  }

  async closed(ws, code) {
    if (ws !== this.ws) return;
    this.ready = false;
    for (const waiter of this.waiting.values()) waiter.reject({ code: "unavailable", message: "connection lost" });
    this.waiting.clear();
    if (this.stopped) return;
    if (code === 4401) {
      // Expired or revoked: a refresh tells which.
      if (!(await this.api.refresh())) {
        this.onState("signed-out");
        return;
      }
    }
    this.attempt += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** (this.attempt - 1)) * (0.75 + Math.random() / 2);
    this.onState("reconnecting");
    setTimeout(() => this.connect(), delay);
  }

  /** Sends a frame; with `expectAnswer`, resolves with its `ack`/`pong` or rejects with its `error`. */
  send(frame, expectAnswer = false) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.ready) {
      return expectAnswer ? Promise.reject({ code: "unavailable", message: "not connected" }) : undefined;
    }
    if (!expectAnswer) {
      this.ws.send(JSON.stringify(frame));
      return undefined;
    }
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.waiting.set(req, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, req }));
    });
  }
}
