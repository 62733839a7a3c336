// The live view: Start/Stop, the two views (annotated video, overlay), drawing options,
// and the session's line, messages and stats.

import { ApiError } from "../api.js";
import { TrackMotion } from "../motion.js";
import { clearCanvas, drawTracks } from "../overlay.js";
import { RateMeter, VideoFrameCounter } from "../rates.js";
import { LiveSession } from "../session.js";
import { CameraControls } from "./camera-controls.js";
import { announce, byId, toast } from "./dom.js";
import { clock, isUsable } from "./format.js";

// Session stats from the health channel older than this are shown as unknown.
const SUMMARY_STALE_MS = 3000;
const IDLE_TEXT = "Your camera is off. Press Start to stream it to the server.";

export class LiveView {
  #picker;
  #stats;
  #token;
  #cameras;
  #live = null; // everything about the current session; replaced on every Start
  #el = {
    viewport: byId("viewport"),
    remote: byId("remote-video"),
    local: byId("local-video"),
    canvas: byId("overlay-canvas"),
    placeholder: byId("placeholder-text"),
    liveBadge: byId("live-badge"),
    liveClock: byId("live-clock"),
    sessionLine: byId("session-line"),
    trackSummary: byId("track-summary"),
    pluginMessage: byId("plugin-message"),
    start: byId("start-button"),
    minScore: byId("opt-min-score"),
    minScoreValue: byId("min-score-value"),
    statsMeta: byId("stats-meta"),
  };

  /** picker: PluginPicker; stats: StatsPanel; token(): the admin token or null. */
  constructor({ picker, stats, token }) {
    this.#picker = picker;
    this.#stats = stats;
    this.#token = token;
    this.#cameras = new CameraControls(() => this.#live?.session ?? null);
    this.#el.start.addEventListener("click", () => (this.#live ? this.stop() : this.start()));
    picker.onChange((name) => this.#switchPlugin(name));
    this.#wireDrawingOptions();
    this.#cameras.refresh();
    setInterval(() => this.#tick(), 1000);
    requestAnimationFrame(() => this.#drawOverlay());
  }

  get session() {
    return this.#live?.session ?? null;
  }

  /** Session summaries from the health channel (DESIGN 4.2 `sessions`). */
  showSessionStats(summaries) {
    const id = this.#live?.session.sessionId;
    const summary = id && summaries.find((item) => item.session_id === id);
    if (summary) this.#live.summary = { ...summary, receivedAt: performance.now() };
  }

  stop(options) {
    this.#live?.session.stop("", options);
  }

  async start() {
    const plugin = this.#picker.value;
    if (!plugin) {
      toast("No plugin to track with: see Plugin health.", "error");
      return;
    }
    this.#cameras.showError(null);
    this.#el.pluginMessage.hidden = true;
    const settings = {
      plugin,
      deviceId: this.#cameras.deviceId,
      resolution: this.#cameras.resolution,
      options: this.#drawingOptions(),
    };
    const session = new LiveSession(settings, this.#token);
    const live = (this.#live = {
      session,
      summary: null,
      motion: new TrackMotion(),
      processed: new RateMeter(),
      received: new VideoFrameCounter(this.#el.remote),
      startedAt: 0,
    });
    this.#stats.reset();
    this.#picker.pin(plugin);
    this.#setPhase("starting");
    this.#el.sessionLine.textContent = "Starting…";
    // Events of a session that has been replaced change nothing.
    const on = (type, handler) =>
      session.addEventListener(type, (event) => this.#live === live && handler(event.detail));
    on("local", (stream) => {
      this.#el.local.srcObject = stream;
    });
    on("remote", (stream) => {
      this.#el.remote.srcObject = stream;
      live.received.start();
    });
    on("live", () => {
      live.startedAt = performance.now();
      this.#setPhase("live");
      this.#showSessionLine();
      announce(`Streaming to ${session.plugin}`);
      this.#cameras.refresh();
    });
    on("tracks", (message) => {
      live.processed.mark();
      // The frame these tracks are for reached the server latency_ms before they were sent.
      live.motion.update(message.tracks, performance.now() - (message.latency_ms ?? 0));
    });
    on("status", (status) => this.#showPluginStatus(status));
    on("error", (error) => toast(error.message, "error", 8000));
    on("ended", (detail) => this.#onEnded(detail));
    await session.start().catch(() => {}); // failures arrive as "ended" with the error
  }

  #onEnded({ reason, error }) {
    const el = this.#el;
    this.#live.received.stop();
    this.#live = null;
    this.#picker.pin(null);
    el.remote.srcObject = null;
    el.local.srcObject = null;
    clearCanvas(el.canvas);
    this.#setPhase("idle");
    el.pluginMessage.hidden = true;
    el.statsMeta.textContent = "No session";
    el.placeholder.textContent = IDLE_TEXT;
    this.#showTrackSummary(null);
    if (error) {
      const shown =
        error instanceof ApiError ? { title: "The session could not start.", help: error.message, code: error.code } : error;
      this.#cameras.showError(shown);
      el.sessionLine.textContent = "Not streaming.";
      announce(`${shown.title} ${shown.help ?? ""}`);
    } else {
      el.sessionLine.textContent = reason ? `Stopped. ${reason}` : "Stopped.";
      if (reason) announce(reason);
    }
  }

  #switchPlugin(name) {
    const session = this.#live?.session;
    if (!session || session.ended || !session.sendOptions({ plugin: name })) return;
    this.#picker.pin(name);
    this.#showSessionLine();
    announce(`Switched to ${name}`);
  }

  #setPhase(phase) {
    const el = this.#el;
    el.viewport.dataset.phase = phase;
    const running = phase !== "idle";
    el.start.dataset.action = running ? "stop" : "start";
    el.start.querySelector(".btn-label").textContent = running ? "Stop" : "Start";
    el.start.setAttribute("aria-label", running ? "Stop the session" : "Start the camera and a session");
    el.liveBadge.hidden = phase !== "live";
    if (phase === "starting") el.placeholder.textContent = "Starting the camera and the session…";
  }

  #showSessionLine() {
    const session = this.#live.session;
    const plugin = document.createElement("strong");
    plugin.textContent = session.plugin;
    const id = session.sessionId ? ` · session ${session.sessionId.slice(0, 8)}` : "";
    this.#el.sessionLine.replaceChildren("Streaming to ", plugin, id);
  }

  /** The data channel's `status`: the session's plugin stopped (or started again) being usable. */
  #showPluginStatus(status) {
    const message = this.#el.pluginMessage;
    if (isUsable(status)) {
      message.hidden = true;
      return;
    }
    const title = document.createElement("strong");
    title.textContent = `${this.#live.session.plugin} is ${status.state}.`;
    const reason = status.reason ? `${status.reason}. ` : "";
    message.replaceChildren(title, `${reason}The video passes through without tracking until it recovers.`);
    message.hidden = false;
  }

  // -- drawing options and views ------------------------------------------------------
  #drawingOptions() {
    return {
      boxes: byId("opt-boxes").checked,
      labels: byId("opt-labels").checked,
      ids: byId("opt-ids").checked,
      min_score: Number(this.#el.minScore.value),
    };
  }

  #wireDrawingOptions() {
    for (const id of ["opt-boxes", "opt-labels", "opt-ids", "opt-min-score"]) {
      const input = byId(id);
      input.addEventListener(input.type === "range" ? "input" : "change", () => {
        this.#el.minScoreValue.value = Number(this.#el.minScore.value).toFixed(2);
        this.#live?.session.sendOptions(this.#drawingOptions());
      });
    }
    for (const radio of document.querySelectorAll('input[name="view"]')) {
      radio.addEventListener("change", () => {
        this.#el.viewport.dataset.view = radio.value;
        if (radio.value !== "overlay") clearCanvas(this.#el.canvas);
      });
    }
  }

  // -- the clock: stats once a second, the overlay every frame --------------------------
  #tick() {
    const live = this.#live;
    if (!live) return;
    const now = performance.now();
    const summary = live.summary && now - live.summary.receivedAt < SUMMARY_STALE_MS ? live.summary : null;
    this.#stats.update({
      fps_in: summary?.fps_in ?? null,
      fps_out: summary?.fps_out ?? null,
      processed: live.session.sessionId ? live.processed.rate() : null,
      dropped: summary?.frames_dropped ?? null,
      box_age_p50: summary?.box_age_ms?.p50 ?? null,
      box_age_p95: summary?.box_age_ms?.p95 ?? null,
    });
    if (!live.startedAt) {
      this.#el.statsMeta.textContent = "Connecting…";
      return;
    }
    this.#el.statsMeta.textContent = `${live.received.meter.rate().toFixed(0)} fps on screen`;
    this.#el.liveClock.textContent = clock((now - live.startedAt) / 1000);
    this.#showTrackSummary(live.processed.count ? this.#currentTracks() : null);
  }

  /** "3 tracks: #1 red, #2 blue, #3 yellow": what is being tracked, in words. */
  #showTrackSummary(tracks) {
    const summary = this.#el.trackSummary;
    if (!tracks) {
      summary.textContent = "";
      delete summary.dataset.tracks;
      return;
    }
    const names = tracks.map((track) => `#${track.id}${track.label ? ` ${track.label}` : ""}`);
    const count = `${tracks.length} track${tracks.length === 1 ? "" : "s"}`;
    summary.textContent = names.length ? `${count}: ${names.join(", ")}` : "Nothing tracked";
    summary.dataset.tracks = String(tracks.length);
  }

  /** The newest tracks, moved to now by their motion; none once they are past coasting. */
  #currentTracks() {
    return this.#live ? this.#live.motion.place(performance.now()) : [];
  }

  #drawOverlay() {
    const el = this.#el;
    if (this.#live && el.viewport.dataset.view === "overlay") {
      const frame = { width: el.remote.videoWidth, height: el.remote.videoHeight };
      drawTracks(el.canvas, el.local, this.#currentTracks(), frame, this.#drawingOptions());
    }
    requestAnimationFrame(() => this.#drawOverlay());
  }
}
