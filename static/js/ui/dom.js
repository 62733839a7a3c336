// Tiny DOM helpers.

/** document.getElementById that fails loudly when the page and the code disagree. */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element;
}

/** el("p", {class: "x", dataset: {a: 1}}, "text", child) */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "text") element.textContent = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** A short message in the corner; read out by screen readers (the container is a live region). */
export function toast(message, kind = "info", ms = 5000) {
  const container = byId("toasts");
  const item = el("div", { class: "toast", dataset: { kind } }, message);
  container.append(item);
  while (container.children.length > 3) container.firstElementChild.remove();
  setTimeout(() => item.remove(), ms);
}

/** Say something to screen readers only. */
export function announce(message) {
  const announcer = byId("announcer");
  announcer.textContent = "";
  // A fresh text node in a later task is what makes screen readers speak a repeat.
  setTimeout(() => {
    announcer.textContent = message;
  }, 50);
}
