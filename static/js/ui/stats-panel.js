// The session stats panel: six tiles, each with its number and a live sparkline.

import { Sparkline } from "../charts.js";
import { el } from "./dom.js";
import { number } from "./format.js";

const TILES = [
  { key: "fps_in", label: "Input", unit: "fps", digits: 1, help: "Frames per second the server receives" },
  { key: "fps_out", label: "Output", unit: "fps", digits: 1, help: "Annotated frames per second the server sends" },
  { key: "processed", label: "Processed", unit: "fps", digits: 1, help: "Frames per second the plugin tracked" },
  { key: "dropped", label: "Dropped", unit: "frames", digits: 0, help: "Frames replaced before the plugin got to them" },
  {
    key: "box_age_p50",
    label: "Box age p50",
    unit: "ms",
    digits: 0,
    help: "Median age of the boxes drawn: how long before each frame the tracker saw what is drawn on it",
  },
  { key: "box_age_p95", label: "Box age p95", unit: "ms", digits: 0, help: "95th percentile of the same age" },
];

export class StatsPanel {
  #tiles = new Map(); // key -> {root, value, chart, previous}

  constructor(list) {
    for (const tile of TILES) {
      const value = el("span", { class: "tile-value" }, "—");
      const canvas = el("canvas", { "aria-hidden": "true", class: `chart chart-${tile.key}` });
      const root = el(
        "li",
        { class: "tile", dataset: { stat: tile.key }, title: tile.help, "data-empty": true },
        el("span", { class: "tile-label" }, tile.label),
        el("span", { class: "tile-reading" }, value, el("span", { class: "tile-unit" }, tile.unit)),
        canvas,
      );
      list.append(root);
      this.#tiles.set(tile.key, { ...tile, root, value, chart: new Sparkline(canvas), previous: null });
    }
  }

  /** One sample per second: {fps_in, fps_out, processed, dropped, box_age_p50, box_age_p95}; null where unknown. */
  update(sample) {
    for (const tile of this.#tiles.values()) {
      const value = sample[tile.key];
      const known = value !== null && value !== undefined && Number.isFinite(value);
      tile.value.textContent = known ? number(value, tile.digits) : "—";
      tile.root.toggleAttribute("data-empty", !known);
      if (known) tile.root.dataset.value = String(value);
      else delete tile.root.dataset.value;
      if (tile.key === "dropped") {
        tile.chart.push(known && tile.previous !== null ? Math.max(0, value - tile.previous) : null);
        tile.previous = known ? value : null;
      } else {
        tile.chart.push(known ? value : null);
      }
    }
  }

  reset() {
    for (const tile of this.#tiles.values()) {
      tile.previous = null;
      tile.chart.clear();
      tile.value.textContent = "—";
      tile.root.setAttribute("data-empty", "");
      delete tile.root.dataset.value;
    }
  }
}
