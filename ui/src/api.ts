// The API client: every call carries the token, and every failure becomes an ApiError holding the status, the
// server's plain-text message and the field it named (X-Error-Field), so screens can show it where it belongs.
import type { Execution, Fire, Job, Member, Me, PauseState, Stats, AuditEntry } from "./types";

const TOKEN_KEY = "dkron-nats-token";

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly text: string,
    readonly field: string | null,
  ) {
    super(text || `HTTP ${status}`);
  }
}

/** Called on any 401: the app shows its login screen. */
let onUnauthorized: () => void = () => undefined;
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

export function authHeaders(token: string | null = getToken()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  token?: string | null;
  /** A 401 answer is the caller's business (the login form), not a reason to log out. */
  quiet401?: boolean;
}

export async function call(path: string, options: CallOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...authHeaders(options.token === undefined ? getToken() : options.token) };
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(path, { method: options.method ?? "GET", headers, body, signal: options.signal });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "the server cannot be reached", null);
  }
  if (!response.ok) {
    const text = (await response.text().catch(() => "")).trim();
    if (response.status === 401 && !options.quiet401) onUnauthorized();
    throw new ApiError(response.status, text || response.statusText, response.headers.get("X-Error-Field"));
  }
  return response;
}

export async function json<T>(path: string, options: CallOptions = {}): Promise<T> {
  const response = await call(path, options);
  return (await response.json()) as T;
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === "AbortError";
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.text;
  if (err instanceof Error) return err.message;
  return String(err);
}

const enc = encodeURIComponent;

export interface JobQuery {
  start: number;
  end: number;
  sort: string;
  order: "ASC" | "DESC";
  q?: string;
  status?: string;
  disabled?: "true" | "false" | "";
  tags?: Record<string, string>;
  metadata?: Record<string, string>;
}

export function jobQueryString(query: JobQuery): string {
  const params = new URLSearchParams();
  params.set("_start", String(query.start));
  params.set("_end", String(query.end));
  params.set("_sort", query.sort);
  params.set("_order", query.order);
  if (query.q) params.set("q", query.q);
  if (query.status) params.set("status", query.status);
  if (query.disabled) params.set("disabled", query.disabled);
  for (const [k, v] of Object.entries(query.tags ?? {})) params.set(`tags[${k}]`, v);
  for (const [k, v] of Object.entries(query.metadata ?? {})) params.set(`metadata[${k}]`, v);
  return params.toString();
}

export async function listJobs(query: JobQuery, signal?: AbortSignal): Promise<{ jobs: Job[]; total: number }> {
  const response = await call(`/v1/jobs?${jobQueryString(query)}`, { signal });
  const jobs = (await response.json()) as Job[];
  return { jobs, total: Number(response.headers.get("X-Total-Count") ?? jobs.length) };
}

/** How many jobs match a filter, without loading them. */
export async function countJobs(filter: Partial<JobQuery>, signal?: AbortSignal): Promise<number> {
  const { total } = await listJobs({ start: 0, end: 1, sort: "name", order: "ASC", ...filter }, signal);
  return total;
}

export const api = {
  me: (token?: string | null) => json<Me>("/v1/me", { token, quiet401: token !== undefined }),
  job: (name: string, signal?: AbortSignal) => json<Job>(`/v1/jobs/${enc(name)}`, { signal }),
  saveJob: (job: unknown) => json<Job>("/v1/jobs", { method: "POST", body: job }),
  deleteJob: (name: string) => call(`/v1/jobs/${enc(name)}`, { method: "DELETE" }),
  runJob: (name: string, force = false) =>
    call(`/v1/jobs/${enc(name)}/run${force ? "?force=true" : ""}`, { method: "POST" }),
  toggleJob: (name: string) => json<Job>(`/v1/jobs/${enc(name)}/toggle`, { method: "POST" }),
  nextFires: (name: string, n: number, signal?: AbortSignal) =>
    json<Fire[]>(`/v1/jobs/${enc(name)}/next?n=${n}`, { signal }),
  previewFires: (name: string, params: Record<string, string>, signal?: AbortSignal) =>
    json<Fire[]>(`/v1/jobs/${enc(name || "preview")}/next?${new URLSearchParams({ n: "5", ...params }).toString()}`, {
      signal,
    }),
  executions: (name: string, signal?: AbortSignal) =>
    json<Execution[]>(`/v1/jobs/${enc(name)}/executions`, { signal }),
  outputText: async (job: string, id: string, signal?: AbortSignal) =>
    (await call(`/v1/jobs/${enc(job)}/executions/${enc(id)}/output`, { signal })).text(),
  cancel: (job: string, id: string) => call(`/v1/jobs/${enc(job)}/executions/${enc(id)}/cancel`, { method: "POST" }),
  busy: (signal?: AbortSignal) => json<Execution[]>("/v1/busy", { signal }),
  members: (signal?: AbortSignal) => json<Member[]>("/v1/members", { signal }),
  leader: (signal?: AbortSignal) => json<Member>("/v1/leader", { signal }),
  stats: (days: number, signal?: AbortSignal) => json<Stats>(`/v1/stats?days=${days}`, { signal }),
  pauseState: (signal?: AbortSignal) => json<PauseState>("/v1/pause", { signal }),
  pause: (scheduling: boolean) => call(`/v1/pause${scheduling ? "?scheduling=true" : ""}`, { method: "POST" }),
  unpause: (scheduling: boolean) => call(`/v1/unpause${scheduling ? "?scheduling=true" : ""}`, { method: "POST" }),
  audit: async (start: number, end: number, signal?: AbortSignal) => {
    const response = await call(`/v1/audit?_start=${start}&_end=${end}`, { signal });
    const entries = (await response.json()) as AuditEntry[];
    return { entries, total: Number(response.headers.get("X-Total-Count") ?? entries.length) };
  },
};
