// The plugin health panel: one card per plugin, updated in place from the health channel.

import { announce, el } from "./dom.js";
import { STATE_HINT, duration, ms, number, time } from "./format.js";

// Plugins that cannot take frames until restarted; a usable one can be reloaded (new code or model file).
const NOT_USABLE = new Set(["FAILED", "UNAVAILABLE"]);

export class HealthPanel {
  #list;
  #meta;
  #cards = new Map(); // name -> {root, parts, last}
  #onRestart;

  /** onRestart(name, button): called when a restart button is pressed. */
  constructor(list, meta, onRestart) {
    this.#list = list;
    this.#meta = meta;
    this.#onRestart = onRestart;
  }

  /** Every plugin (a snapshot, or GET /v1/plugins): adds, updates, and removes cards. */
  showAll(plugins) {
    const names = new Set(plugins.map((plugin) => plugin.name));
    for (const [name, card] of this.#cards) {
      if (!names.has(name)) {
        card.root.remove();
        this.#cards.delete(name);
      }
    }
    for (const plugin of plugins) this.show(plugin, { quiet: true });
    this.#updateMeta();
  }

  /** One plugin's health object. */
  show(plugin, { quiet = false } = {}) {
    let card = this.#cards.get(plugin.name);
    if (!card) {
      card = this.#createCard(plugin.name);
      this.#cards.set(plugin.name, card);
      this.#insertSorted(card.root, plugin.name);
    }
    const previous = card.last;
    if (previous && previous.state !== plugin.state) {
      if (!quiet) announce(`${plugin.name} is now ${plugin.state}${plugin.reason ? `: ${plugin.reason}` : ""}`);
      if (NOT_USABLE.has(previous.state) && !NOT_USABLE.has(plugin.state) && previous.reason) {
        card.past = { state: previous.state, reason: previous.reason, at: new Date() };
      }
    }
    card.last = plugin;
    this.#fill(card, plugin);
    this.#updateMeta();
  }

  /** Grey the list out while the channel is down: what it shows may be old. */
  setStale(stale) {
    this.#list.toggleAttribute("data-stale", stale);
    this.#list.setAttribute("aria-busy", String(stale));
    this.#updateMeta(stale);
  }

  #insertSorted(root, name) {
    const after = [...this.#list.children].find((child) => child.dataset.name > name);
    this.#list.insertBefore(root, after ?? null);
  }

  #createCard(name) {
    const parts = {
      version: el("span", { class: "plugin-version" }),
      badge: el("span", { class: "badge" }),
      desc: el("p", { class: "plugin-desc" }),
      reason: el("p", { class: "plugin-reason" }),
      note: el("p", { class: "plugin-note" }),
      past: el("p", { class: "plugin-past" }),
      meta: el("dl", { class: "plugin-meta" }),
      restart: el("button", { type: "button", class: "btn btn-small", "aria-label": `Restart ${name}` }, "Restart"),
    };
    parts.restart.addEventListener("click", () => this.#onRestart(name, parts.restart));
    const root = el(
      "li",
      { class: "plugin", dataset: { name }, "aria-label": `Plugin ${name}` },
      el("div", { class: "plugin-head" }, el("span", { class: "plugin-name" }, name), parts.version, parts.badge),
      parts.desc,
      parts.reason,
      parts.note,
      parts.past,
      parts.meta,
      el("div", { class: "plugin-actions" }, parts.restart),
    );
    return { root, parts, last: null, past: null };
  }

  #fill(card, plugin) {
    const { root, parts } = card;
    root.dataset.state = plugin.state;
    parts.version.textContent = plugin.version ? `v${plugin.version}` : "";
    parts.badge.dataset.state = plugin.state;
    parts.badge.textContent = plugin.state;
    parts.badge.title = STATE_HINT[plugin.state] ?? "";
    parts.desc.textContent = plugin.description ?? "";
    parts.desc.hidden = !plugin.description;
    parts.reason.textContent = plugin.reason ?? "";
    parts.reason.hidden = !plugin.reason;
    parts.note.textContent = plugin.degraded ? `Degraded: ${plugin.degraded}` : "";
    parts.note.hidden = !plugin.degraded;
    const past = card.past;
    parts.past.hidden = !past || NOT_USABLE.has(plugin.state);
    parts.past.textContent = past ? `Recovered at ${time(past.at)} from ${past.state}: ${past.reason}` : "";
    parts.meta.replaceChildren(...this.#metaItems(plugin));
    // LOADED: a load or restart is under way, and the server would answer 409.
    parts.restart.hidden = plugin.state === "LOADED";
    const action = NOT_USABLE.has(plugin.state) ? "Restart" : "Reload";
    parts.restart.dataset.action = action;
    parts.restart.setAttribute("aria-label", `${action} ${plugin.name}`);
    if (parts.restart.dataset.busy === undefined) {
      parts.restart.textContent = action;
      parts.restart.disabled = false;
    }
  }

  #metaItems(plugin) {
    const items = [
      ["Device", plugin.device ?? "—"],
      ["Sessions", number(plugin.active_sessions)],
      ["Frames", number(plugin.success_count)],
      ["Errors", number(plugin.error_count)],
      ["Avg", ms(plugin.avg_execution_time_ms)],
      ["p95", ms(plugin.p95_execution_time_ms)],
      ["Restarts", number(plugin.restarts)],
      ["Up", duration(plugin.uptime_seconds)],
    ];
    return items.map(([term, value]) =>
      el("div", { dataset: { field: term.toLowerCase() } }, el("dt", {}, term), el("dd", {}, value)),
    );
  }

  #updateMeta(stale = this.#list.hasAttribute("data-stale")) {
    const plugins = [...this.#cards.values()].map((card) => card.last);
    const broken = plugins.filter((plugin) => NOT_USABLE.has(plugin.state)).length;
    const summary = `${plugins.length} plugin${plugins.length === 1 ? "" : "s"}${broken ? `, ${broken} not usable` : ""}`;
    this.#meta.textContent = stale ? `${summary} · last known` : `${summary} · live`;
  }
}
