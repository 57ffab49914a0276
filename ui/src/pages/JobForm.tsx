import type { ComponentChildren } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, errorText, isAbort } from "../api";
import { Fires } from "../components/Fires";
import { KeyValueEditor, type Pair } from "../components/KeyValueEditor";
import { useDebounced } from "../hooks";
import { jobHref, navigate } from "../router";
import { isAdmin } from "../session";
import { toast } from "../toast";
import {
  BUILT_IN_EXECUTORS,
  EXECUTOR_FIELDS,
  FormError,
  NEW_JOB,
  fromJob,
  isBuiltIn,
  toJob,
  type FormState,
} from "../jobform";
import type { Fire, Job, Me } from "../types";

type Errors = Record<string, string>;

const idOf = (field: string) => `jf-${field.replace(/[^a-zA-Z0-9_-]/g, "-")}`;

function FieldError({ field, errors }: { field: string; errors: Errors }) {
  const text = errors[field];
  if (!text) return null;
  return (
    <p class="field-error" role="alert" data-testid={`error-${field}`} id={`${idOf(field)}-error`}>
      {text}
    </p>
  );
}

/** A labelled field: the label is the API's own name for it, so the form reads like the JSON. */
function Field(props: { field: string; errors: Errors; hint?: string; wide?: boolean; children: ComponentChildren }) {
  return (
    <div class={`field${props.wide ? " wide" : ""}${props.errors[props.field] ? " has-error" : ""}`}>
      <label for={idOf(props.field)}>{props.field}</label>
      {props.children}
      {props.hint && <span class="hint">{props.hint}</span>}
      <FieldError field={props.field} errors={props.errors} />
    </div>
  );
}

export function JobForm({ name, me }: { name?: string; me: Me }) {
  const editing = name !== undefined;
  const [form, setForm] = useState<FormState | null>(editing ? null : fromJob(NEW_JOB));
  const [loadError, setLoadError] = useState("");
  const [view, setView] = useState<"form" | "json">("form");
  const [jsonText, setJsonText] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [saving, setSaving] = useState(false);

  useEffect(() => {
    if (!editing) return;
    const controller = new AbortController();
    api
      .job(name, controller.signal)
      .then((job) => setForm(fromJob(job)))
      .catch((err: unknown) => !isAbort(err) && setLoadError(errorText(err)));
    return () => controller.abort();
  }, [name]);

  // An error naming a field the form does not show goes to the form-level slot.
  const formRef = useRef<HTMLFormElement>(null);
  useLayoutEffect(() => {
    const orphans = Object.keys(errors).filter(
      (f) => f !== "form" && !formRef.current?.querySelector(`[data-testid="error-${CSS.escape(f)}"]`),
    );
    if (orphans.length) {
      const text = orphans.map((f) => errors[f]).join(" ");
      const rest = { ...errors };
      for (const f of orphans) delete rest[f];
      setErrors({ ...rest, form: [errors.form, text].filter(Boolean).join(" ") });
    }
  }, [errors, view]);

  if (!isAdmin(me)) {
    return (
      <main id="main">
        <h1>{editing ? `Edit ${name}` : "New job"}</h1>
        <p>Only admins may create or edit jobs.</p>
      </main>
    );
  }
  if (!form) {
    return (
      <main id="main">
        <h1>Edit {name}</h1>
        {loadError ? <p role="alert" class="error">{loadError}</p> : <p class="muted">Loading…</p>}
      </main>
    );
  }

  const job = form.job;
  const setJob = (change: Partial<Job>) => setForm({ ...form, job: { ...job, ...change } });
  const setConfig = (key: string, value: string) => {
    const config = { ...(job.executor_config ?? {}) };
    if (value === "") delete config[key];
    else config[key] = value;
    setJob({ executor_config: config });
  };
  const setBackoff = (change: Partial<NonNullable<Job["retry_backoff"]>>) =>
    setJob({ retry_backoff: { ...(job.retry_backoff ?? {}), ...change } });
  const setDst = (change: Partial<NonNullable<Job["dst_policy"]>>) =>
    setJob({ dst_policy: { ...(job.dst_policy ?? {}), ...change } });

  const text = (field: keyof Job & string, props: { hint?: string; placeholder?: string; readOnly?: boolean } = {}) => (
    <Field field={field} errors={errors} hint={props.hint}>
      <input
        id={idOf(field)}
        value={(job[field] as string | null | undefined) ?? ""}
        placeholder={props.placeholder}
        readOnly={props.readOnly}
        aria-invalid={!!errors[field]}
        aria-describedby={errors[field] ? `${idOf(field)}-error` : undefined}
        onInput={(e) => setJob({ [field]: e.currentTarget.value } as Partial<Job>)}
      />
    </Field>
  );
  const number = (field: keyof Job & string, hint?: string) => (
    <Field field={field} errors={errors} hint={hint}>
      <input
        id={idOf(field)}
        type="number"
        inputMode="numeric"
        value={String((job[field] as number | undefined) ?? "")}
        aria-invalid={!!errors[field]}
        onInput={(e) => {
          const raw = e.currentTarget.value;
          setJob({ [field]: raw === "" ? undefined : Number(raw) } as Partial<Job>);
        }}
      />
    </Field>
  );
  const check = (field: keyof Job & string, hint?: string) => (
    <Field field={field} errors={errors} hint={hint}>
      <input
        id={idOf(field)}
        type="checkbox"
        checked={!!job[field]}
        onChange={(e) => setJob({ [field]: e.currentTarget.checked } as Partial<Job>)}
      />
    </Field>
  );
  const select = (field: string, value: string, options: [string, string][], onChange: (v: string) => void) => (
    <Field field={field} errors={errors}>
      <select id={idOf(field)} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        {options.map(([v, label]) => (
          <option key={v} value={v}>
            {label}
          </option>
        ))}
      </select>
    </Field>
  );

  const switchTo = (next: "form" | "json") => {
    if (next === view) return;
    if (next === "json") {
      try {
        setJsonText(JSON.stringify(toJob(form), null, 2));
        setErrors({});
        setView("json");
      } catch (err) {
        if (err instanceof FormError) setErrors({ [err.field]: err.message });
      }
    } else {
      try {
        const parsed = JSON.parse(jsonText) as Job;
        if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not a JSON object");
        if (editing) parsed.name = name;
        setForm(fromJob(parsed));
        setErrors({});
        setView("form");
      } catch (err) {
        setErrors({ form: `The JSON cannot be read: ${errorText(err)}` });
      }
    }
  };

  const save = async (event: Event) => {
    event.preventDefault();
    let body: Job;
    try {
      body = view === "json" ? (JSON.parse(jsonText) as Job) : toJob(form);
    } catch (err) {
      setErrors(err instanceof FormError ? { [err.field]: err.message } : { form: `The JSON cannot be read: ${errorText(err)}` });
      return;
    }
    setSaving(true);
    try {
      const saved = await api.saveJob(body);
      toast(`Saved ${saved.name}`);
      navigate(jobHref(saved.name));
    } catch (err) {
      if (err instanceof ApiError && err.status !== 401) {
        const guessed = err.field ?? /executor_config\.(\w+)/.exec(err.text)?.[0] ?? null;
        setErrors(guessed && view === "form" ? { [guessed]: err.text } : { form: err.text });
        toast(`Not saved: ${err.text}`, "error");
      } else setErrors({ form: errorText(err) });
    } finally {
      setSaving(false);
    }
  };

  const executor = job.executor ?? "";
  const configFields = EXECUTOR_FIELDS[executor];

  return (
    <main id="main" tabIndex={-1}>
      <h1>{editing ? `Edit ${name}` : "New job"}</h1>
      <div role="tablist" aria-label="Edit as" class="tabs">
        <button type="button" role="tab" aria-selected={view === "form"} onClick={() => switchTo("form")}>
          Form
        </button>
        <button type="button" role="tab" aria-selected={view === "json"} onClick={() => switchTo("json")}>
          JSON
        </button>
      </div>
      <form ref={formRef} onSubmit={save} class="job-form" noValidate>
        <FieldError field="form" errors={errors} />
        {view === "json" ? (
          <div class="field wide">
            <label for="jf-json">Job JSON</label>
            <textarea
              id="jf-json"
              class="code"
              rows={28}
              spellcheck={false}
              value={jsonText}
              onInput={(e) => setJsonText(e.currentTarget.value)}
            />
          </div>
        ) : (
          <>
            <fieldset>
              <legend>Job</legend>
              <div class="fields">
                {text("name", { readOnly: editing, hint: editing ? "a job's name cannot change" : undefined })}
                {text("displayname")}
                {text("schedule", { placeholder: "@every 1h, 0 30 9 * * *, @manually…" })}
                {text("timezone", { placeholder: "e.g. Europe/Paris (empty: UTC)" })}
                <SchedulePreview form={form} />
                <Field field="executor" errors={errors} hint="shell, http, nats or a plugin's name">
                  <input
                    id={idOf("executor")}
                    list="executors"
                    value={executor}
                    onInput={(e) => {
                      const next = e.currentTarget.value;
                      const wasBuiltIn = isBuiltIn(job.executor);
                      if (wasBuiltIn && !isBuiltIn(next)) {
                        // Into the raw JSON editor: start it from the fields' values.
                        const configText = JSON.stringify(job.executor_config ?? {}, null, 2);
                        setForm({ ...form, job: { ...job, executor: next }, configText });
                      } else if (!wasBuiltIn && isBuiltIn(next)) {
                        // Back to fields: keep what the JSON editor held, if it reads.
                        let config = job.executor_config ?? {};
                        try {
                          const parsed: unknown = JSON.parse(form.configText || "{}");
                          if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
                            config = Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
                          }
                        } catch {
                          // Unreadable JSON: the fields keep the last good config.
                        }
                        setForm({ ...form, job: { ...job, executor: next, executor_config: config } });
                      } else setJob({ executor: next });
                    }}
                  />
                  <datalist id="executors">
                    {BUILT_IN_EXECUTORS.map((x) => (
                      <option key={x} value={x} />
                    ))}
                  </datalist>
                </Field>
              </div>
            </fieldset>
            <fieldset>
              <legend>executor_config{executor ? ` (${executor})` : ""}</legend>
              <FieldError field="executor_config" errors={errors} />
              <div class="fields">
                {configFields ? (
                  configFields.map((f) => {
                    const field = `executor_config.${f.key}`;
                    const value = job.executor_config?.[f.key] ?? "";
                    return (
                      <Field key={field} field={field} errors={errors} hint={f.hint} wide={f.kind === "textarea"}>
                        {f.kind === "bool" ? (
                          <input
                            id={idOf(field)}
                            type="checkbox"
                            checked={value === "true"}
                            onChange={(e) => setConfig(f.key, e.currentTarget.checked ? "true" : "")}
                          />
                        ) : f.kind === "select" ? (
                          <select id={idOf(field)} value={value} onChange={(e) => setConfig(f.key, e.currentTarget.value)}>
                            <option value="">—</option>
                            {(f.options ?? []).map((o) => (
                              <option key={o} value={o}>
                                {o}
                              </option>
                            ))}
                          </select>
                        ) : f.kind === "textarea" ? (
                          <textarea
                            id={idOf(field)}
                            rows={3}
                            value={value}
                            onInput={(e) => setConfig(f.key, e.currentTarget.value)}
                          />
                        ) : (
                          <input
                            id={idOf(field)}
                            type={f.key === "password" ? "password" : "text"}
                            value={value}
                            aria-invalid={!!errors[field]}
                            onInput={(e) => setConfig(f.key, e.currentTarget.value)}
                          />
                        )}
                      </Field>
                    );
                  })
                ) : (
                  <div class="field wide">
                    <label for="jf-config-json">executor_config (JSON)</label>
                    <textarea
                      id="jf-config-json"
                      class="code"
                      rows={5}
                      value={form.configText}
                      onInput={(e) => setForm({ ...form, configText: e.currentTarget.value })}
                    />
                  </div>
                )}
              </div>
            </fieldset>
            <fieldset>
              <legend>Behaviour</legend>
              <div class="fields">
                {check("disabled")}
                {select("concurrency", job.concurrency ?? "allow", [["allow", "allow"], ["forbid", "forbid"], ["replace", "replace"]], (v) => setJob({ concurrency: v }))}
                {number("retries")}
                {text("parent_job")}
                {select(
                  "misfire_policy",
                  job.misfire_policy ?? "run_once",
                  [["run_once", "run_once"], ["run_all", "run_all"], ["skip", "skip"]],
                  (v) => setJob({ misfire_policy: v }),
                )}
                {text("starting_deadline", { placeholder: "e.g. 5m (empty: server default)" })}
                {number("misfire_max", "1 to 100")}
                {check("retry_on_other_node")}
                {select(
                  "notify_on",
                  job.notify_on ?? "always",
                  [["always", "always"], ["failure", "failure"], ["recovery", "recovery"], ["failure_and_recovery", "failure_and_recovery"]],
                  (v) => setJob({ notify_on: v }),
                )}
                {check("ephemeral", "delete after the first success")}
                {text("owner")}
                {text("owner_email")}
                {text("starts_at", { placeholder: "RFC 3339, e.g. 2030-01-01T00:00:00Z" })}
                {text("expires_at", { placeholder: "RFC 3339" })}
                {text("history_max_age", { placeholder: "e.g. 720h" })}
                {number("history_limit", "0: the server's default")}
              </div>
            </fieldset>
            <fieldset>
              <legend>retry_backoff and dst_policy</legend>
              <div class="fields">
                <Field field="retry_backoff.initial" errors={errors}>
                  <input id={idOf("retry_backoff.initial")} placeholder="1s" value={job.retry_backoff?.initial ?? ""} onInput={(e) => setBackoff({ initial: e.currentTarget.value })} />
                </Field>
                <Field field="retry_backoff.max" errors={errors}>
                  <input id={idOf("retry_backoff.max")} placeholder="5m" value={job.retry_backoff?.max ?? ""} onInput={(e) => setBackoff({ max: e.currentTarget.value })} />
                </Field>
                <Field field="retry_backoff.multiplier" errors={errors}>
                  <input
                    id={idOf("retry_backoff.multiplier")}
                    type="number"
                    step="0.1"
                    placeholder="2"
                    value={job.retry_backoff?.multiplier === undefined ? "" : String(job.retry_backoff.multiplier)}
                    onInput={(e) => setBackoff({ multiplier: e.currentTarget.value === "" ? undefined : Number(e.currentTarget.value) })}
                  />
                </Field>
                <Field field="retry_backoff.jitter" errors={errors}>
                  <input
                    id={idOf("retry_backoff.jitter")}
                    type="checkbox"
                    checked={job.retry_backoff?.jitter !== false}
                    onChange={(e) => setBackoff({ jitter: e.currentTarget.checked })}
                  />
                </Field>
                {select("dst_policy.gap", job.dst_policy?.gap ?? "", [["", "default"], ["run_at_transition", "run_at_transition"], ["skip", "skip"]], (v) => setDst({ gap: v }))}
                {select("dst_policy.overlap", job.dst_policy?.overlap ?? "", [["", "default"], ["once", "once"], ["twice", "twice"]], (v) => setDst({ overlap: v }))}
              </div>
            </fieldset>
            <div class="editors">
              <div>
                <KeyValueEditor name="tags" pairs={form.tags} onChange={(tags) => setForm({ ...form, tags })} />
                <FieldError field="tags" errors={errors} />
              </div>
              <div>
                <KeyValueEditor name="metadata" pairs={form.metadata} onChange={(metadata) => setForm({ ...form, metadata })} />
                <FieldError field="metadata" errors={errors} />
              </div>
              <div>
                <DependsOnEditor form={form} setForm={setForm} />
                <FieldError field="depends_on" errors={errors} />
              </div>
              <div>
                <KeyValueEditor
                  name="processors"
                  keyLabel="name"
                  valueLabel="config (JSON)"
                  pairs={form.processors}
                  onChange={(processors: Pair[]) => setForm({ ...form, processors })}
                />
                <FieldError field="processors" errors={errors} />
              </div>
            </div>
          </>
        )}
        <div class="actions form-actions">
          <button type="submit" class="primary" disabled={saving}>
            Save
          </button>
          <a class="button" href={editing ? jobHref(name) : "#/jobs"}>
            Cancel
          </a>
        </div>
      </form>
    </main>
  );
}

function DependsOnEditor({ form, setForm }: { form: FormState; setForm: (f: FormState) => void }) {
  const rows = form.depends_on;
  const update = (i: number, change: Partial<{ job: string; on: string }>) =>
    setForm({ ...form, depends_on: rows.map((r, j) => (j === i ? { ...r, ...change } : r)) });
  return (
    <fieldset class="kv">
      <legend>depends_on</legend>
      {rows.map((r, i) => (
        <div class="kv-row" key={i}>
          <input aria-label={`depends_on job ${i + 1}`} placeholder="job" value={r.job} onInput={(e) => update(i, { job: e.currentTarget.value })} />
          <select aria-label={`depends_on on ${i + 1}`} value={r.on} onChange={(e) => update(i, { on: e.currentTarget.value })}>
            {["success", "failure", "always"].map((o) => (
              <option key={o} value={o}>
                {o}
              </option>
            ))}
          </select>
          <button type="button" onClick={() => setForm({ ...form, depends_on: rows.filter((_, j) => j !== i) })}>
            Remove<span class="sr-only">{` depends_on ${i + 1}`}</span>
          </button>
        </div>
      ))}
      <button type="button" onClick={() => setForm({ ...form, depends_on: [...rows, { job: "", on: "success" }] })}>
        Add depends_on
      </button>
    </fieldset>
  );
}

/** The next 5 fires of the schedule being typed (GET /next with the unsaved schedule), or why it is invalid. */
function SchedulePreview({ form }: { form: FormState }) {
  const { job } = form;
  const wanted = useDebounced(
    JSON.stringify({
      name: job.name,
      schedule: (job.schedule ?? "").trim(),
      timezone: (job.timezone ?? "").trim(),
      gap: job.dst_policy?.gap ?? "",
      overlap: job.dst_policy?.overlap ?? "",
    }),
    300,
  );
  const [result, setResult] = useState<{ fires?: Fire[]; error?: string } | null>(null);
  useEffect(() => {
    const w = JSON.parse(wanted) as { name: string; schedule: string; timezone: string; gap: string; overlap: string };
    if (!w.schedule) {
      setResult(null);
      return;
    }
    const controller = new AbortController();
    const params: Record<string, string> = { schedule: w.schedule };
    if (w.timezone) params.timezone = w.timezone;
    if (w.gap) params.dst_gap = w.gap;
    if (w.overlap) params.dst_overlap = w.overlap;
    api
      .previewFires(w.name, params, controller.signal)
      .then((fires) => setResult({ fires }))
      .catch((err: unknown) => !isAbort(err) && setResult({ error: errorText(err) }));
    return () => controller.abort();
  }, [wanted]);
  return (
    <div class="field wide preview" data-testid="schedule-preview" aria-live="polite">
      <span class="label">Next fires</span>
      {result === null ? (
        <span class="muted">Type a schedule to see when it fires.</span>
      ) : result.error ? (
        <span class="error">{result.error}</span>
      ) : result.fires && result.fires.length ? (
        <Fires fires={result.fires} />
      ) : (
        <span class="muted">No fires: runs only when started (or by its dependencies).</span>
      )}
    </div>
  );
}
