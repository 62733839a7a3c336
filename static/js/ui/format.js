// Formatting for people: numbers, durations, states.

export const USABLE_STATES = new Set(["INITIALIZED", "RUNNING"]);

/** What each state means, in a few words (the state name itself is always shown too). */
export const STATE_HINT = {
  LOADED: "starting",
  INITIALIZED: "ready",
  RUNNING: "tracking",
  FAILED: "failed",
  UNAVAILABLE: "can't run here",
};

export function isUsable(plugin) {
  return USABLE_STATES.has(plugin?.state);
}

export function number(value, digits = 0) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ms(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const minutes = Math.floor(s / 60);
  return `${minutes}:${String(s % 60).padStart(2, "0")}`;
}

export function time(date) {
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
