// The HTTP half of protocol v1: requests with the tab's tokens, refreshing
// the access token once when it has expired. Each tab keeps its own session
// in sessionStorage, so each tab is its own device.

const SESSION_KEY = "chat.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(storage = window.sessionStorage) {
    this.storage = storage;
    this.refreshing = null;
  }

  get session() {
    try {
      return JSON.parse(this.storage.getItem(SESSION_KEY) || "null");
    } catch {
      return null;
    }
  }

  set session(value) {
    if (value) this.storage.setItem(SESSION_KEY, JSON.stringify(value));
    else this.storage.removeItem(SESSION_KEY);
  }

  async request(method, path, body, { auth = true, retried = false } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const session = this.session;
    if (auth && session) headers.Authorization = `Bearer ${session.access_token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, "unavailable", "The server cannot be reached.");
    }
    if (response.status === 401 && auth && session && !retried) {
      if (await this.refresh()) return this.request(method, path, body, { auth, retried: true });
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw failure(response, data);
    return data;
  }

  /** A file's bytes (an attachment), fetched with the token an <img> or a link cannot send. */
  async blob(path, retried = false) {
    const session = this.session;
    let response;
    try {
      response = await fetch(path, { headers: session ? { Authorization: `Bearer ${session.access_token}` } : {} });
    } catch {
      throw new ApiError(0, "unavailable", "The server cannot be reached.");
    }
    if (response.status === 401 && session && !retried && (await this.refresh())) return this.blob(path, true);
    if (!response.ok) throw failure(response, await response.json().catch(() => null));
    return response.blob();
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }

  put(path) {
    return this.request("PUT", path);
  }

  delete(path) {
    return this.request("DELETE", path);
  }

  /** Trades the refresh token for new tokens; false when the session is over. */
  async refresh() {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const session = this.session;
        if (!session) return false;
        try {
          const tokens = await this.request("POST", "/v1/auth/refresh", { refresh_token: session.refresh_token }, { auth: false });
          this.session = { ...session, access_token: tokens.access_token, refresh_token: tokens.refresh_token };
          return true;
        } catch (e) {
          if (e.status === 401) this.session = null;
          return false;
        } finally {
          setTimeout(() => (this.refreshing = null), 0);
        }
      })();
    }
    return this.refreshing;
  }

  async login(username, password) {
    const tokens = await this.request("POST", "/v1/auth/login", { username, password, device_name: deviceName() }, { auth: false });
    this.session = { ...tokens, username };
    return this.session;
  }

  async register(username, password) {
    await this.request("POST", "/v1/auth/register", { username, password }, { auth: false });
    return this.login(username, password);
  }

  async logout() {
    try {
      await this.request("POST", "/v1/auth/logout");
    } finally {
      this.session = null;
    }
  }
}

function failure(response, data) {
  const error = data && data.error ? data.error : { code: "unavailable", message: `HTTP ${response.status}` };
  return new ApiError(response.status, error.code, error.message);
}

function deviceName() {
  const agent = navigator.userAgent;
  const browser = /Firefox/.test(agent) ? "Firefox" : /Edg\//.test(agent) ? "Edge" : /Chrom/.test(agent) ? "Chrome" : /Safari/.test(agent) ? "Safari" : "Browser";
  return `${browser} tab`;
}
