// One live-tracking session: camera -> RTCPeerConnection -> POST /v1/webrtc/offer (DESIGN 4.3).
//
// Events (CustomEvent, data in `detail`):
//   "local"   MediaStream         the camera preview (again after a camera change)
//   "remote"  MediaStream         the annotated video from the server
//   "live"    {sessionId}         the peer connection is up
//   "tracks"  tracks message      {frame, pts, plugin, tracks, latency_ms}
//   "status"  status message      {state, reason}: the session's plugin changed state
//   "error"   error message       {code, message}: the server refused an options message
//   "ended"   {reason, error}     the session is over (stopped here, or by the server)

import { deleteSession, sendOffer } from "./api.js";
import { openCamera } from "./camera.js";

const GATHER_TIMEOUT_MS = 3000;
// The server ends a session whose video has not connected in 15 s (ICE_CONNECT_TIMEOUT_S in
// app/stream/session.py); the page gives up at the same time and says what to change.
const ICE_CONNECT_TIMEOUT_MS = 15000;
const ICE_HELP =
  "The browser could not reach any address the server offered for video. If the server runs on " +
  "another machine, start it with --ice-address set to an address this browser can reach, or give it " +
  "a TURN server both can reach (--ice-server turn://user:pass@host:port); a firewall or VPN that " +
  "blocks UDP between them has the same effect.";

/** The error shown when the video connection never comes up (kind "ice"). */
export function iceError(what) {
  return { title: `The video connection did not connect: ${what}.`, help: ICE_HELP, kind: "ice" };
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    // Host candidates come at once; do not wait long on a slow STUN-less gather.
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

export class LiveSession extends EventTarget {
  sessionId = null;
  plugin;
  #settings;
  #token;
  #stream = null;
  #pc = null;
  #sender = null;
  #channel = null;
  #ended = false;
  #connected = false;
  #iceTimer = null;

  /** settings: {plugin, deviceId, resolution, options}; token(): the admin token or null. */
  constructor(settings, token = () => null) {
    super();
    this.#settings = settings;
    this.plugin = settings.plugin;
    this.#token = token;
  }

  get ended() {
    return this.#ended;
  }

  get stream() {
    return this.#stream;
  }

  /** Open the camera and the session; throws CameraError or ApiError (after cleaning up). */
  async start() {
    const { deviceId, resolution, plugin, options } = this.#settings;
    try {
      this.#stream = await openCamera(deviceId, resolution);
      if (this.#ended) return this.#releaseCamera();
      this.#emit("local", this.#stream);
      const pc = (this.#pc = new RTCPeerConnection({ iceServers: [] }));
      const [track] = this.#stream.getVideoTracks();
      const transceiver = pc.addTransceiver(track, { direction: "sendrecv", streams: [this.#stream] });
      this.#sender = transceiver.sender;
      pc.addEventListener("track", (event) => this.#emit("remote", event.streams[0] ?? new MediaStream([event.track])));
      pc.addEventListener("connectionstatechange", () => this.#onConnectionState());
      this.#openChannel(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      const answer = await sendOffer(pc.localDescription.sdp, plugin, options);
      this.sessionId = answer.session_id;
      if (this.#ended) return this.#closeOnServer(false);
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.#iceTimer = setTimeout(() => this.#iceFailed(`no answer within ${ICE_CONNECT_TIMEOUT_MS / 1000} s`), ICE_CONNECT_TIMEOUT_MS);
      await this.#keepResolution();
    } catch (error) {
      this.#finish("", error);
      throw error;
    }
  }

  #openChannel(pc) {
    const channel = (this.#channel = pc.createDataChannel("tracks"));
    channel.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "tracks" || message.type === "status" || message.type === "error") {
        this.#emit(message.type, message);
      }
    });
  }

  async #keepResolution() {
    // Boxes are in pixels of the frames the server gets: ask the encoder to drop frames
    // rather than scale them down under load, so the overlay stays aligned.
    try {
      const parameters = this.#sender.getParameters();
      parameters.degradationPreference = "maintain-resolution";
      await this.#sender.setParameters(parameters);
    } catch {
      // Not supported by every browser; the overlay then scales by the received size.
    }
  }

  #iceFailed(what) {
    if (this.#connected || this.#ended) return;
    this.#closeOnServer(false);
    this.#finish("", iceError(what));
  }

  #onConnectionState() {
    const state = this.#pc?.connectionState;
    if (state === "connected") {
      this.#connected = true;
      clearTimeout(this.#iceTimer);
      this.#emit("live", { sessionId: this.sessionId });
    }
    if (state === "failed" && !this.#connected) {
      this.#iceFailed("the connectivity checks failed");
    } else if (state === "failed") {
      this.stop(
        "The video connection to the server failed. If the server runs on another machine, " +
          "start it with --ice-address set to an address this browser can reach.",
      );
    } else if (state === "closed" || state === "disconnected") {
      // "disconnected" can recover; give it a moment before calling it over.
      if (state === "closed") this.stop("The server ended the session.");
      else setTimeout(() => this.#pc?.connectionState === "disconnected" && this.stop("The connection to the server was lost."), 4000);
    }
  }

  /** Send an `options` message (overlay toggles, min_score, plugin). False when the channel is not open. */
  sendOptions(options) {
    if (this.#channel?.readyState !== "open") return false;
    this.#channel.send(JSON.stringify({ type: "options", ...options }));
    if (options.plugin) this.plugin = options.plugin;
    return true;
  }

  /** Swap the camera or its resolution without a new session. */
  async changeCamera(deviceId, resolution) {
    if (deviceId === this.#settings.deviceId && resolution === this.#settings.resolution) return;
    // The old camera is released first: a device that is still open keeps its capture
    // format (so a new resolution would not apply), and some devices open only once.
    this.#releaseCamera();
    let stream;
    try {
      stream = await openCamera(deviceId, resolution);
    } catch (error) {
      // Back to what worked, so the session keeps its video; the caller shows the error.
      stream = await openCamera(this.#settings.deviceId, this.#settings.resolution).catch(() => null);
      if (stream) await this.#useStream(stream);
      throw error;
    }
    this.#settings = { ...this.#settings, deviceId, resolution };
    await this.#useStream(stream);
  }

  async #useStream(stream) {
    if (this.#ended || !this.#sender) {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    await this.#sender.replaceTrack(stream.getVideoTracks()[0]);
    this.#stream = stream;
    this.#emit("local", stream);
  }

  /** Close here and on the server; `keepalive` lets the request outlive a closing tab. Idempotent. */
  stop(reason = "", { keepalive = false } = {}) {
    if (this.#ended) return;
    this.#closeOnServer(keepalive);
    this.#finish(reason, null);
  }

  #closeOnServer(keepalive) {
    // Closing the peer connection ends the session on the server too (DTLS close);
    // DELETE says so at once, and covers a peer that never connected.
    if (this.sessionId) deleteSession(this.sessionId, this.#token(), { keepalive }).catch(() => {});
  }

  #finish(reason, error) {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#iceTimer);
    try {
      this.#channel?.close();
      this.#pc?.close();
    } finally {
      this.#releaseCamera();
      this.#emit("ended", { reason, error });
    }
  }

  #releaseCamera() {
    this.#stream?.getTracks().forEach((track) => track.stop());
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
