// The plugin picker: every plugin, the unusable ones disabled with their reason shown.

import { el } from "./dom.js";
import { STATE_HINT, isUsable } from "./format.js";

const PREFERRED = ["videotracker", "colorblob"]; // DESIGN's default tracker first
const STORAGE_KEY = "livetrack.plugin";

export class PluginPicker {
  #select;
  #hint;
  #details;
  #summary;
  #list;
  #plugins = new Map();
  #signature = "";
  #pinned = null;

  constructor({ select, hint, details, summary, list }) {
    this.#select = select;
    this.#hint = hint;
    this.#details = details;
    this.#summary = summary;
    this.#list = list;
    select.addEventListener("change", () => {
      localStorage.setItem(STORAGE_KEY, select.value);
      this.#describe();
    });
  }

  get value() {
    return this.#select.value;
  }

  set value(name) {
    this.#select.value = name;
    this.#describe();
  }

  get selected() {
    return this.#plugins.get(this.#select.value) ?? null;
  }

  /** While a session runs, the picker shows its plugin, usable or not; null releases it. */
  pin(name) {
    this.#pinned = name;
    this.#signature = "";
    this.#render();
  }

  onChange(callback) {
    this.#select.addEventListener("change", () => callback(this.#select.value));
  }

  showAll(plugins) {
    this.#plugins = new Map(plugins.map((plugin) => [plugin.name, plugin]));
    this.#render();
  }

  show(plugin) {
    this.#plugins.set(plugin.name, plugin);
    this.#render();
  }

  #render() {
    const plugins = [...this.#plugins.values()].sort((a, b) => a.name.localeCompare(b.name));
    // Counter updates arrive every second; rebuilding the options would close an open list.
    const signature = JSON.stringify(plugins.map((p) => [p.name, p.state, p.reason, p.device, p.description]));
    if (signature === this.#signature) return;
    this.#signature = signature;
    const current = this.#select.value || localStorage.getItem(STORAGE_KEY);
    this.#select.replaceChildren(
      ...plugins.map((plugin) =>
        el(
          "option",
          {
            value: plugin.name,
            disabled: !isUsable(plugin),
            title: plugin.reason ?? plugin.description ?? undefined,
          },
          isUsable(plugin) ? plugin.name : `${plugin.name} — ${plugin.state} (${STATE_HINT[plugin.state]})`,
        ),
      ),
    );
    this.#select.value = this.#choose(plugins, current);
    this.#describe();
    this.#renderUnusable(plugins.filter((plugin) => !isUsable(plugin)));
  }

  /** The session's plugin; else the current choice while it is usable; else a usable default. */
  #choose(plugins, current) {
    const byName = this.#plugins;
    if (this.#pinned && byName.has(this.#pinned)) return this.#pinned;
    if (current && byName.has(current) && (isUsable(byName.get(current)) || !plugins.some(isUsable))) return current;
    const usable = plugins.filter(isUsable).map((plugin) => plugin.name);
    return PREFERRED.find((name) => usable.includes(name)) ?? usable[0] ?? current ?? plugins[0]?.name ?? "";
  }

  #describe() {
    const plugin = this.selected;
    if (!plugin) {
      this.#hint.textContent = this.#plugins.size ? "Pick a plugin." : "No plugins are installed on this server.";
      return;
    }
    const description = (plugin.description ?? "").replace(/([^.!?])$/, "$1.");
    const device = plugin.device ? ` Runs on ${plugin.device}.` : "";
    this.#hint.textContent = isUsable(plugin)
      ? `${description}${device}`.trim()
      : `${plugin.name} is ${plugin.state}: ${plugin.reason ?? STATE_HINT[plugin.state]}`;
  }

  #renderUnusable(unusable) {
    this.#details.hidden = unusable.length === 0;
    this.#summary.textContent =
      unusable.length === 1 ? "1 plugin can't be used right now" : `${unusable.length} plugins can't be used right now`;
    this.#list.replaceChildren(
      ...unusable.map((plugin) =>
        el(
          "li",
          { dataset: { name: plugin.name } },
          el("code", {}, plugin.name),
          ` ${plugin.state}: `,
          plugin.reason ?? STATE_HINT[plugin.state],
        ),
      ),
    );
  }
}
