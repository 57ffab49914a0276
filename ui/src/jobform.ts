// The form's state and its conversion to and from the API's job JSON (kept apart from the view so the
// JSON tab and the fields always describe the same job).
import type { Dependency, Job } from "./types";
import { fromPairs, toPairs, type Pair } from "./components/KeyValueEditor";

export const BUILT_IN_EXECUTORS = ["shell", "http", "nats"] as const;

export interface ConfigField {
  key: string;
  kind: "text" | "textarea" | "bool" | "select";
  options?: string[];
  hint?: string;
}

/** The keys each built-in executor reads (dkron_nats/agent/*.py), as Dkron spells them. */
export const EXECUTOR_FIELDS: Record<string, ConfigField[]> = {
  shell: [
    { key: "command", kind: "text", hint: "the command line" },
    { key: "shell", kind: "bool", hint: "run through /bin/sh -c" },
    { key: "env", kind: "text", hint: "KEY=value,KEY2=value" },
    { key: "cwd", kind: "text", hint: "working directory" },
    { key: "timeout", kind: "text", hint: "e.g. 30s, 5m" },
    { key: "su", kind: "text", hint: "user[:group]" },
    { key: "mem_limit", kind: "text", hint: "e.g. 512MiB" },
  ],
  http: [
    { key: "url", kind: "text" },
    { key: "method", kind: "select", options: ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] },
    { key: "body", kind: "textarea" },
    { key: "headers", kind: "textarea", hint: 'JSON array, e.g. ["Content-Type: application/json"]' },
    { key: "timeout", kind: "text", hint: "seconds or a duration" },
    { key: "expectCode", kind: "text", hint: "e.g. 200 or 200,201" },
    { key: "expectBody", kind: "text", hint: "a regular expression" },
    { key: "debug", kind: "bool" },
    { key: "tlsNoVerifyPeer", kind: "bool" },
    { key: "tlsCertificateFile", kind: "text" },
    { key: "tlsCertificateKeyFile", kind: "text" },
    { key: "tlsRootCAsFile", kind: "text" },
  ],
  nats: [
    { key: "url", kind: "text", hint: "nats://host:4222" },
    { key: "subject", kind: "text" },
    { key: "message", kind: "textarea" },
    { key: "headers", kind: "textarea" },
    { key: "request", kind: "bool", hint: "wait for a reply" },
    { key: "timeout", kind: "text" },
    { key: "userName", kind: "text" },
    { key: "password", kind: "text" },
    { key: "debug", kind: "bool" },
  ],
};

export interface FormState {
  job: Job;
  tags: Pair[];
  metadata: Pair[];
  /** processor name and its config as JSON text */
  processors: Pair[];
  depends_on: Dependency[];
  /** executor_config as JSON text, for executors without fields */
  configText: string;
}

/** Fields the server computes: never sent back. */
const READ_ONLY = ["id", "success_count", "error_count", "last_success", "last_error", "status", "next", "dependent_jobs"];

export const NEW_JOB: Job = {
  name: "",
  displayname: "",
  schedule: "",
  timezone: "",
  owner: "",
  owner_email: "",
  disabled: false,
  concurrency: "allow",
  executor: "shell",
  executor_config: {},
  retries: 0,
  parent_job: "",
  misfire_policy: "run_once",
  starting_deadline: "",
  misfire_max: 10,
  retry_backoff: null,
  retry_on_other_node: false,
  history_limit: 0,
  history_max_age: "",
  dst_policy: null,
  notify_on: "always",
  ephemeral: false,
  starts_at: null,
  expires_at: null,
};

export function fromJob(source: Job): FormState {
  const job: Job = { ...NEW_JOB, ...source };
  for (const key of READ_ONLY) delete (job as unknown as Record<string, unknown>)[key];
  const dst = job.dst_policy;
  job.dst_policy = {
    gap: dst?.gap === "default" ? "" : (dst?.gap ?? ""),
    overlap: dst?.overlap === "default" ? "" : (dst?.overlap ?? ""),
  };
  job.executor_config = { ...(job.executor_config ?? {}) };
  return {
    job,
    tags: toPairs(job.tags),
    metadata: toPairs(job.metadata),
    processors: Object.entries(job.processors ?? {}).map(([name, config]) => [name, JSON.stringify(config)]),
    depends_on: (job.depends_on ?? []).map((d) => ({ ...d })),
    configText: JSON.stringify(job.executor_config, null, 2),
  };
}

export class FormError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function emptyToNull(value: string | null | undefined): string | null {
  return value && value.trim() ? value.trim() : null;
}

/** The job JSON the API takes, from the form's state; a FormError names the field that cannot be read. */
export function toJob(form: FormState): Job {
  const job: Job = { ...form.job };
  job.tags = fromPairs(form.tags);
  job.metadata = fromPairs(form.metadata);
  const processors: Record<string, Record<string, string>> = {};
  for (const [name, text] of form.processors) {
    if (!name.trim()) continue;
    try {
      const parsed: unknown = text.trim() ? JSON.parse(text) : {};
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      processors[name.trim()] = Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
    } catch {
      throw new FormError("processors", `the config of processor ${name} is not a JSON object of strings`);
    }
  }
  job.processors = Object.keys(processors).length ? processors : null;
  const deps = form.depends_on.filter((d) => d.job.trim());
  job.depends_on = deps.length ? deps.map((d) => ({ job: d.job.trim(), on: d.on || "success" })) : null;
  if (!isBuiltIn(job.executor)) {
    try {
      const parsed: unknown = form.configText.trim() ? JSON.parse(form.configText) : {};
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      job.executor_config = Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
    } catch {
      throw new FormError("executor_config", "executor_config must be a JSON object of strings");
    }
  } else {
    job.executor_config = Object.fromEntries(Object.entries(job.executor_config ?? {}).filter(([, v]) => v !== ""));
  }
  const rb = job.retry_backoff;
  if (rb) {
    const kept: NonNullable<Job["retry_backoff"]> = {};
    if (rb.initial) kept.initial = rb.initial;
    if (rb.max) kept.max = rb.max;
    if (rb.multiplier !== undefined && !Number.isNaN(rb.multiplier)) kept.multiplier = rb.multiplier;
    const anySet = kept.initial !== undefined || kept.max !== undefined || kept.multiplier !== undefined;
    if (anySet || rb.jitter === false) {
      kept.jitter = rb.jitter !== false;
      job.retry_backoff = kept;
    } else job.retry_backoff = null;
  }
  const dst = job.dst_policy;
  job.dst_policy = dst && (dst.gap || dst.overlap) ? { gap: dst.gap ?? "", overlap: dst.overlap ?? "" } : null;
  job.starts_at = emptyToNull(job.starts_at);
  job.expires_at = emptyToNull(job.expires_at);
  return job;
}

export function isBuiltIn(executor: string | undefined): boolean {
  return (BUILT_IN_EXECUTORS as readonly string[]).includes(executor ?? "");
}
