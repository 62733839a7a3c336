// Asks for the admin token (DESIGN 4.6) when the server answers 401, and retries with it.

import { byId } from "./dom.js";

const STORAGE_KEY = "livetrack.admin-token";
let memoryToken = null;

/** The admin token given in this tab, or null. */
export function adminToken() {
  return memoryToken ?? sessionStorage.getItem(STORAGE_KEY);
}

function keepToken(token, remember) {
  memoryToken = token;
  if (remember) sessionStorage.setItem(STORAGE_KEY, token);
  else sessionStorage.removeItem(STORAGE_KEY);
}

function forgetToken() {
  memoryToken = null;
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Shows the dialog; resolves to {token, remember}, or null when cancelled. */
function askToken(text, error) {
  const dialog = byId("token-dialog");
  const input = byId("token-input");
  byId("token-text").textContent = text;
  byId("token-error").textContent = error ?? "";
  input.value = "";
  input.setAttribute("aria-invalid", String(Boolean(error)));
  return new Promise((resolve) => {
    const form = byId("token-form");
    const cancel = byId("token-cancel");
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) {
        byId("token-error").textContent = "Enter the token the server was started with (--admin-token).";
        input.focus();
        return;
      }
      finish({ token, remember: byId("token-remember").checked });
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}

/**
 * Runs call(token) with the known token; on 401 asks for one, on 403 says it was wrong
 * and asks again. Resolves to the call's result, or null when the person cancels.
 */
export async function withAdminToken(call, purpose) {
  let token = adminToken();
  for (;;) {
    try {
      return await call(token);
    } catch (error) {
      if (error.status !== 401 && error.status !== 403) throw error;
      const wrong = error.status === 403 && token;
      if (wrong) forgetToken();
      const answer = await askToken(
        `This server needs its admin token to ${purpose}.`,
        wrong ? "That token was not accepted. Check it and try again." : null,
      );
      if (!answer) return null;
      token = answer.token;
      keepToken(answer.token, answer.remember);
    }
  }
}
