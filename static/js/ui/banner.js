// Server reachability: the pill in the top bar and the banner under it.

import { byId } from "./dom.js";

export class ConnectionBanner {
  #banner = byId("banner");
  #retryIn = byId("banner-retry-in");
  #pill = byId("link-state");
  #pillText = byId("link-text");
  #countdown = 0;

  /** onRetry(): the "Retry now" button. */
  constructor(onRetry) {
    byId("banner-retry").addEventListener("click", onRetry);
  }

  /** link: the health channel's "link" event detail. */
  show(link) {
    clearInterval(this.#countdown);
    this.#pill.dataset.state = link.state;
    if (link.state === "open") {
      this.#pillText.textContent = "Connected";
      this.#banner.hidden = true;
      return;
    }
    if (link.state === "connecting") {
      this.#pillText.textContent = link.attempt ? "Reconnecting…" : "Connecting…";
      if (!this.#banner.hidden) this.#retryIn.textContent = "Reconnecting now…";
      return;
    }
    this.#pillText.textContent = "Offline";
    this.#banner.hidden = false;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((link.retryAt - Date.now()) / 1000));
      this.#retryIn.textContent = `Retrying in ${seconds} s.`;
    };
    tick();
    this.#countdown = setInterval(tick, 1000);
  }
}
