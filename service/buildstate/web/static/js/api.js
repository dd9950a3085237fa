// The public HTTP API, as the dashboard calls it: same origin, JSON, a Bearer token from sign-in.
//
// The token lives in sessionStorage only (one tab, gone when it closes; never localStorage, never a
// cookie). Any 401 drops it and tells the app, which sends the person back to sign-in.

const TOKEN_KEY = "buildstate.session";

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super(problem?.detail || problem?.title || fallback || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem ?? null;
  }
}

export class Unauthorized extends ApiError {
  constructor(problem) {
    super(401, problem, "Please sign in");
    this.name = "Unauthorized";
  }
}

/** The current token, or null when there is none or it has expired. */
function session() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKEN_KEY) ?? "null");
  } catch {
    return null;
  }
}

export function token() {
  const saved = session();
  if (!saved || typeof saved.token !== "string") return null;
  // An expired token is not sent, but stays until a 401 so that sign-in can say the session ended.
  if (typeof saved.expiresAt === "number" && Date.now() >= saved.expiresAt) return null;
  return saved.token;
}

export function saveToken(accessToken, expiresIn, scope = "") {
  const expiresAt = Number.isFinite(expiresIn) ? Date.now() + expiresIn * 1000 : null;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token: accessToken, expiresAt, scope }));
}

/** Whether this session's token was granted `scope` (POST /token says which). It only decides which
 * controls the page offers: the service checks every request itself, and a 403 is shown as it comes. */
export function granted(scope) {
  const saved = session();
  return typeof saved?.scope === "string" && saved.scope.split(" ").includes(scope);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Headers every API call carries; the stream reader uses them too. */
export function authHeaders() {
  const current = token();
  return current ? { Authorization: `Bearer ${current}` } : {};
}

/** Tell the app the session is over (a 401 anywhere): it forgets the token and shows sign-in. */
export function unauthorized() {
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  forgetToken();
  window.dispatchEvent(new CustomEvent("buildstate:unauthorized", { detail: { expired: hadToken } }));
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** GET (or any method) a JSON resource of the API; throws ApiError, or Unauthorized after a 401. */
export async function api(path, { method = "GET", body, params, signal } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${path}${query(params)}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, null, "The service cannot be reached; check your connection and try again.");
  }
  if (response.status === 401) {
    const problem = await problemOf(response);
    unauthorized();
    throw new Unauthorized(problem);
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.json();
}

/** POST /token; the token is kept for this tab. Throws ApiError with the server's words for bad credentials
 * or rate limits. */
export async function signIn(username, password) {
  let response;
  try {
    response = await fetch("/token", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, null, "The service cannot be reached; check your connection and try again.");
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    const fallback = response.status === 401 ? "Wrong username or password." : undefined;
    throw new ApiError(response.status, problem, fallback);
  }
  const grant = await response.json();
  if (typeof grant.access_token !== "string") throw new ApiError(response.status, null, "No token in reply");
  saveToken(grant.access_token, grant.expires_in, typeof grant.scope === "string" ? grant.scope : "");
}
