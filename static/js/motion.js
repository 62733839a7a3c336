// Boxes moved by their track's motion to the time they are drawn (DESIGN 1), as the server
// does for the annotated video (app/stream/motion.py): the overlay stays on the local preview
// between results instead of trailing it by the result's age.

// A result older than this is not drawn: the plugin stalls, or lost what it tracked.
export const COASTING_MS = 500;
const HISTORY_MS = 1000;
const SMOOTHING = 0.6;
const MAX_SPEED_PX_S = 3000;

function centre(box) {
  return [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2];
}

export class TrackMotion {
  #tracks = [];
  #velocities = [];
  #resultAt = null;
  #seen = new Map(); // id -> {at, cx, cy, velocity}

  /** A result for the frame seen at `at` (ms, performance.now() clock). */
  update(tracks, at) {
    if (this.#resultAt !== null && at < this.#resultAt) return;
    this.#tracks = tracks;
    this.#velocities = tracks.map((track) => this.#observe(track, at));
    this.#resultAt = at;
    for (const [id, seen] of this.#seen) if (at - seen.at > HISTORY_MS) this.#seen.delete(id);
  }

  #observe(track, at) {
    const [cx, cy] = centre(track.box);
    let velocity = Array.isArray(track.velocity) ? track.velocity : null;
    const previous = this.#seen.get(track.id);
    if (!velocity && previous && at > previous.at && at - previous.at <= HISTORY_MS) {
      const seconds = (at - previous.at) / 1000;
      let raw = [(cx - previous.cx) / seconds, (cy - previous.cy) / seconds];
      if (Math.hypot(raw[0], raw[1]) > MAX_SPEED_PX_S) raw = null;
      else if (previous.velocity) {
        raw = raw.map((v, i) => SMOOTHING * v + (1 - SMOOTHING) * previous.velocity[i]);
      }
      velocity = raw;
    }
    this.#seen.set(track.id, { at, cx, cy, velocity });
    return velocity;
  }

  clear() {
    this.#tracks = [];
    this.#velocities = [];
    this.#resultAt = null;
    this.#seen.clear();
  }

  /** The tracks to draw at `at` (ms): moved by their velocity, none once the result is past coasting. */
  place(at) {
    if (this.#resultAt === null || at - this.#resultAt > COASTING_MS) return [];
    const seconds = (at - this.#resultAt) / 1000;
    return this.#tracks.map((track, n) => {
      const velocity = this.#velocities[n];
      if (!velocity) return track;
      const [dx, dy] = [velocity[0] * seconds, velocity[1] * seconds];
      const [x1, y1, x2, y2] = track.box;
      return { ...track, box: [x1 + dx, y1 + dy, x2 + dx, y2 + dy] };
    });
  }
}
