// Small live charts, drawn by hand on a canvas (no library).

const DEFAULT_POINTS = 60; // seconds of history
const MIN_SLOTS = 8;

/** A sparkline of the last `points` samples; `null` samples leave a gap. */
export class Sparkline {
  #canvas;
  #samples = [];

  constructor(canvas, { points = DEFAULT_POINTS, min = 0 } = {}) {
    this.#canvas = canvas;
    this.points = points;
    this.min = min;
  }

  push(value) {
    this.#samples.push(Number.isFinite(value) ? value : null);
    if (this.#samples.length > this.points) this.#samples.shift();
    this.draw();
  }

  clear() {
    this.#samples = [];
    this.draw();
  }

  draw() {
    const canvas = this.#canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * ratio);
    const height = Math.round(canvas.clientHeight * ratio);
    if (!width || !height) return;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const values = this.#samples.filter((value) => value !== null);
    if (!values.length) return;
    const colour = getComputedStyle(canvas).color || "#0f766e";
    const max = Math.max(...values, this.min + 1e-9);
    const low = Math.min(this.min, ...values);
    const pad = 2 * ratio;
    // Until the history fills the window, the samples so far are spread over the width.
    const slots = Math.max(this.#samples.length, MIN_SLOTS);
    const x = (index) => (index / (slots - 1)) * (width - 2 * pad) + pad;
    const y = (value) => height - pad - ((value - low) / (max - low || 1)) * (height - 2 * pad);
    const offset = slots - this.#samples.length;

    context.lineWidth = 1.5 * ratio;
    context.lineJoin = "round";
    context.strokeStyle = colour;
    context.fillStyle = colour;
    let started = false;
    let first = 0;
    context.beginPath();
    this.#samples.forEach((value, index) => {
      if (value === null) {
        started = false;
        return;
      }
      if (!started) {
        context.moveTo(x(index + offset), y(value));
        if (first === 0) first = index + offset;
        started = true;
      } else {
        context.lineTo(x(index + offset), y(value));
      }
    });
    context.stroke();
    // A soft fill under the line, and a dot on the newest value.
    context.globalAlpha = 0.12;
    context.lineTo(x(slots - 1), height);
    context.lineTo(x(first), height);
    context.closePath();
    context.fill();
    context.globalAlpha = 1;
    const last = this.#samples[this.#samples.length - 1];
    if (last !== null) {
      context.beginPath();
      context.arc(x(slots - 1), y(last), 2.2 * ratio, 0, Math.PI * 2);
      context.fill();
    }
  }
}
