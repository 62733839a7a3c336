// Rates over a sliding window, for what the browser counts itself.

export class RateMeter {
  #times = [];

  constructor(windowMs = 2000) {
    this.windowMs = windowMs;
    this.count = 0;
  }

  mark(now = performance.now()) {
    this.count += 1;
    this.#times.push(now);
    this.#trim(now);
  }

  /** Events per second over the window. */
  rate(now = performance.now()) {
    this.#trim(now);
    return (this.#times.length * 1000) / this.windowMs;
  }

  reset() {
    this.count = 0;
    this.#times = [];
  }

  #trim(now) {
    const oldest = now - this.windowMs;
    let drop = 0;
    while (drop < this.#times.length && this.#times[drop] < oldest) drop += 1;
    if (drop) this.#times.splice(0, drop);
  }
}

/** Frames painted by a <video>, counted with requestVideoFrameCallback where there is one. */
export class VideoFrameCounter {
  #video;
  #handle = 0;
  #running = false;

  constructor(video) {
    this.#video = video;
    this.meter = new RateMeter();
  }

  start() {
    if (this.#running || !("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    this.#running = true;
    const tick = () => {
      this.meter.mark();
      this.#handle = this.#video.requestVideoFrameCallback(tick);
    };
    this.#handle = this.#video.requestVideoFrameCallback(tick);
  }

  stop() {
    if (this.#running) this.#video.cancelVideoFrameCallback(this.#handle);
    this.#running = false;
    this.meter.reset();
  }
}
