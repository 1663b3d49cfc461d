// The REST API as the dashboard uses it: the bearer token, problem+json errors, paths relative
// to the page (so the dashboard also works behind a reverse proxy that adds a path prefix).

const TOKEN_KEY = "cloudstate.token";
const ROOT = new URL("../", document.baseURI); // the page is <root>/ui/

/** An API error: the HTTP status and the problem's words (RFC 9457 ``detail`` or ``title``). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The token lives in this tab's sessionStorage only: gone when the tab closes. */
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** ``path`` (no leading slash) with query parameters; an array value repeats the parameter. */
export function url(path, params = {}) {
  const target = new URL(path, ROOT);
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "") target.searchParams.append(name, one);
    }
  }
  return target;
}

export class Api {
  /** ``onUnauthorized`` is called when the token stops being accepted (revoked meanwhile). */
  constructor(token, { onUnauthorized = () => {} } = {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /** The raw Response (for the event stream); 401 still reports the lost session. */
  async raw(path, { params, method = "GET", body, signal, headers = {} } = {}) {
    const response = await fetch(url(path, params), {
      method,
      signal,
      cache: "no-store",
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) this.onUnauthorized(await problemOf(response));
    return response;
  }

  /** The decoded JSON answer; an ``ApiError`` for any status that is not 2xx. */
  async json(path, options = {}) {
    const response = await this.raw(path, { ...options, headers: { Accept: "application/json" } });
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    if (response.status === 204) return null;
    return response.json();
  }

  /** The text answer (``/metrics``). */
  async text(path, options = {}) {
    const response = await this.raw(path, options);
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    return response.text();
  }

  get(path, params, signal) {
    return this.json(path, { params, signal });
  }

  post(path, body) {
    return this.json(path, { method: "POST", body });
  }

  delete(path) {
    return this.json(path, { method: "DELETE" });
  }
}

async function problemOf(response) {
  try {
    const body = await response.clone().json();
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: fall through to the status line
  }
  return { status: response.status, title: response.statusText || `HTTP ${response.status}` };
}

/** A refused token in words an operator can act on (401: unknown or revoked; 403: scope). */
export function refusal(error) {
  if (error.status === 401) return `The API refused this token: ${error.message}.`;
  if (error.status === 403) return `This token may not do that: ${error.message}.`;
  return error.message;
}
