// The camera picker, the resolution choice, and camera messages under the video.

import { listCameras } from "../camera.js";
import { byId } from "./dom.js";

export class CameraControls {
  #field = byId("camera-field");
  #camera = byId("camera-select");
  #resolution = byId("resolution-select");
  #viewport = byId("viewport");
  #message = byId("camera-message");
  #currentSession;
  // Changes run one at a time, each with the choice as it is when its turn comes:
  // two quick changes (camera, then resolution) must not finish in the wrong order.
  #changes = Promise.resolve();

  /** currentSession(): the live session, or null. */
  constructor(currentSession) {
    this.#currentSession = currentSession;
    this.#camera.addEventListener("change", () => this.#change());
    this.#resolution.addEventListener("change", () => this.#change());
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.refresh());
  }

  get deviceId() {
    return this.#camera.value || null;
  }

  get resolution() {
    return this.#resolution.value;
  }

  /** Fill the picker; it shows only when there is a choice (labels need the camera permission once). */
  async refresh() {
    const cameras = await listCameras().catch(() => []);
    const chosen = this.#camera.value;
    this.#camera.replaceChildren(
      ...cameras.map((camera, index) => new Option(camera.label || `Camera ${index + 1}`, camera.deviceId)),
    );
    if (cameras.some((camera) => camera.deviceId === chosen)) this.#camera.value = chosen;
    this.#field.hidden = cameras.length < 2 || !cameras[0].deviceId;
  }

  /** A CameraError ({kind, title, help}) or any {title, help, code}; null hides the message. */
  showError(error) {
    this.#message.replaceChildren();
    if (!error) {
      this.#message.hidden = true;
      return;
    }
    const title = document.createElement("strong");
    title.textContent = error.title ?? "Could not start the session.";
    this.#message.append(title, error.help ?? error.message);
    this.#message.dataset.kind = error.kind ?? error.code ?? "error";
    this.#message.hidden = false;
  }

  #change() {
    this.#viewport.dataset.aspect = this.resolution === "1280x720" ? "16x9" : "4x3";
    this.#changes = this.#changes.then(async () => {
      const session = this.#currentSession();
      if (!session || session.ended) return;
      this.showError(null);
      try {
        await session.changeCamera(this.deviceId, this.resolution);
      } catch (error) {
        this.showError(error);
      }
    });
  }
}
