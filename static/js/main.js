// The live-tracking page: the server's plugins and health on one side, the live view on the other.

import { ApiError, listPlugins, restartPlugin } from "./api.js";
import { HealthChannel } from "./health.js";
import { ConnectionBanner } from "./ui/banner.js";
import { byId, toast } from "./ui/dom.js";
import { HealthPanel } from "./ui/health-panel.js";
import { LiveView } from "./ui/live-view.js";
import { PluginPicker } from "./ui/plugin-picker.js";
import { StatsPanel } from "./ui/stats-panel.js";
import { adminToken, withAdminToken } from "./ui/token-dialog.js";

const health = new HealthChannel();
const banner = new ConnectionBanner(() => health.retryNow());
const healthPanel = new HealthPanel(byId("plugin-list"), byId("health-meta"), restart);
const picker = new PluginPicker({
  select: byId("plugin-select"),
  hint: byId("plugin-hint"),
  details: byId("unusable"),
  summary: byId("unusable-summary"),
  list: byId("unusable-list"),
});
const liveView = new LiveView({ picker, stats: new StatsPanel(byId("stats-tiles")), token: adminToken });

function showPlugins(plugins) {
  healthPanel.showAll(plugins);
  picker.showAll(plugins);
}

function showPlugin(plugin) {
  healthPanel.show(plugin);
  picker.show(plugin);
}

health.addEventListener("snapshot", (event) => {
  showPlugins(event.detail.plugins);
  liveView.showSessionStats(event.detail.sessions);
});
health.addEventListener("plugin", (event) => showPlugin(event.detail));
health.addEventListener("sessions", (event) => liveView.showSessionStats(event.detail));
health.addEventListener("link", (event) => {
  banner.show(event.detail);
  healthPanel.setStale(event.detail.state !== "open");
});

/** The restart button: POST .../restart, asking for the admin token when the server wants it. */
async function restart(name, button) {
  button.disabled = true;
  button.dataset.busy = "";
  button.textContent = "Restarting…";
  try {
    const health = await withAdminToken((token) => restartPlugin(name, token), "restart plugins");
    if (health) {
      toast(`Restarting ${name}…`);
      showPlugin(health);
    }
  } catch (error) {
    toast(error instanceof ApiError ? `Could not restart ${name}: ${error.message}` : String(error), "error", 8000);
  } finally {
    delete button.dataset.busy;
    button.disabled = false;
    button.textContent = button.dataset.action; // Restart or Reload, for the state the plugin is in now
  }
}

// Closing the tab closes the session on the server (fetch keepalive outlives the page).
window.addEventListener("pagehide", () => {
  liveView.stop({ keepalive: true });
  health.stop();
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) health.start(); // back from the back-forward cache
});

listPlugins()
  .then((plugins) => {
    if (!health.connected) showPlugins(plugins);
  })
  .catch(() => {}); // when the server is down, the health channel's banner says so
health.start();
