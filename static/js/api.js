// REST calls to the livetrack server (DESIGN 4.1, 4.3). Every failure is an ApiError.

/** A failed call: `status` is 0 when the server could not be reached at all. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  get unreachable() {
    return this.status === 0;
  }
}

async function request(path, { method = "GET", body, token, keepalive = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      keepalive,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `The server at ${location.host} could not be reached; check that it is running.`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      detail.code || `http_${response.status}`,
      detail.message || `the server answered ${response.status} ${response.statusText}`,
    );
  }
  return data;
}

/** GET /v1/plugins: the flat list of health objects. */
export function listPlugins() {
  return request("/v1/plugins");
}

/** POST /v1/plugins/{name}/restart: 202 with the health object. */
export function restartPlugin(name, token) {
  return request(`/v1/plugins/${encodeURIComponent(name)}/restart`, { method: "POST", token });
}

/** POST /v1/webrtc/offer: {sdp, type: "answer", session_id}. */
export function sendOffer(sdp, plugin, options) {
  return request("/v1/webrtc/offer", { method: "POST", body: { sdp, type: "offer", plugin, options } });
}

/**
 * DELETE /v1/sessions/{id}. With `keepalive` it outlives the page (tab closing):
 * sendBeacon can only POST, and fetch's keepalive works for DELETE.
 */
export function deleteSession(sessionId, token, { keepalive = false } = {}) {
  return request(`/v1/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE", token, keepalive });
}
