// The live health channel, GET /v1/ws/health (DESIGN 4.2), with reconnects.
//
// Events (all CustomEvent, data in `detail`):
//   "snapshot" {plugins, sessions}   first message of every connection, and after a resync
//   "plugin"   health object         one plugin changed
//   "sessions" [summary...]          per-session stats, about once a second
//   "link"     {state, attempt, retryAt, error}
//              state: "connecting" | "open" | "down"; retryAt: ms epoch of the next try

export const BACKOFF_S = [1, 2, 4, 8, 16];
// The server sends a heartbeat every 15 s; silence past this means a dead connection.
const SILENCE_LIMIT_MS = 40_000;

export class HealthChannel extends EventTarget {
  connected = false;
  #url;
  #socket = null;
  #attempt = 0; // failed attempts since the last good connection
  #retryTimer = 0;
  #silenceTimer = 0;
  #seq = 0;
  #stopped = false;

  constructor(url = HealthChannel.defaultUrl()) {
    super();
    this.#url = url;
  }

  static defaultUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/v1/ws/health`;
  }

  start() {
    this.#stopped = false;
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#silenceTimer);
    this.#socket?.close(1000, "page closed");
    this.#socket = null;
  }

  /** Try now instead of waiting for the backoff timer. */
  retryNow() {
    if (this.#socket || this.#stopped) return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  }

  #connect() {
    this.#emit("link", { state: "connecting", attempt: this.#attempt });
    let socket;
    try {
      socket = new WebSocket(this.#url);
    } catch (error) {
      this.#scheduleRetry(error.message);
      return;
    }
    this.#socket = socket;
    this.#seq = 0;
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
    socket.addEventListener("close", (event) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      clearTimeout(this.#silenceTimer);
      const why = event.reason || (event.code === 1006 ? "connection failed" : `closed with code ${event.code}`);
      this.#scheduleRetry(why);
    });
  }

  #scheduleRetry(error) {
    if (this.#stopped) return;
    const delay = BACKOFF_S[Math.min(this.#attempt, BACKOFF_S.length - 1)] * 1000;
    this.#attempt += 1;
    const retryAt = Date.now() + delay;
    this.#emit("link", { state: "down", attempt: this.#attempt, retryAt, error });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #armSilenceTimer() {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => this.#socket?.close(4000, "no heartbeat"), SILENCE_LIMIT_MS);
  }

  #send(message) {
    if (this.#socket?.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(message));
  }

  #onMessage(text) {
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      return;
    }
    this.#armSilenceTimer();
    const { type, seq, payload } = envelope;
    // seq rises by one per message; a gap means something was lost: ask for a fresh snapshot.
    const gap = this.#seq !== 0 && seq !== this.#seq + 1 && type !== "snapshot";
    this.#seq = seq;
    if (gap) this.#send({ type: "resync" });
    switch (type) {
      case "snapshot":
        this.#attempt = 0; // a good connection resets the backoff
        this.#emit("link", { state: "open", attempt: 0 });
        this.#emit("snapshot", payload);
        break;
      case "plugin":
        this.#emit("plugin", payload);
        break;
      case "sessions":
        this.#emit("sessions", payload.sessions ?? []);
        break;
      default: // heartbeat, pong, error: nothing to show
        break;
    }
  }

  #emit(type, detail) {
    if (type === "link") this.connected = detail.state === "open";
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
