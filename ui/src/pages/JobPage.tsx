import { useRef, useState } from "preact/hooks";
import { ApiError, api, errorText } from "../api";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { DependencyGraph, type GraphEdge } from "../components/DependencyGraph";
import { Fires } from "../components/Fires";
import { Output } from "../components/Output";
import { Status } from "../components/Status";
import { Time } from "../components/Time";
import { useEventBuffer } from "../executions";
import { useAbortable, useHub, useInterval, useThrottled } from "../hooks";
import { jobHref, navigate } from "../router";
import { canOperate, isAdmin } from "../session";
import { toast, toastError } from "../toast";
import { duration, isSet } from "../time";
import type { Execution, Fire, Job, Me } from "../types";
import { cancelExecution } from "./Busy";
import { Tags } from "./Members";

const SHOWN_EXECUTIONS = 50;

function upsert(list: Execution[], execution: Execution): Execution[] {
  const at = list.findIndex((e) => e.id === execution.id);
  if (at >= 0) return list.map((e, i) => (i === at ? { ...e, ...execution } : e));
  return [execution, ...list];
}

export function JobPage({ name, me }: { name: string; me: Me }) {
  const [job, setJob] = useState<Job | null>(null);
  const [missing, setMissing] = useState("");
  const [executions, setExecutions] = useState<Execution[] | null>(null);
  const [fires, setFires] = useState<Fire[] | null>(null);
  const [chosen, setChosen] = useState<string | null>(null);
  const [confirming, setConfirming] = useState(false);
  const [showAll, setShowAll] = useState(false);
  const [tick, setTick] = useState(0);
  const [ready, setReady] = useState(false);
  /** Deleted: nothing more to read about it (each read would only answer 404). */
  const gone = useRef(false);
  const events = useEventBuffer();
  const [, setNow] = useState(0);
  const anyRunning = (executions ?? []).some((e) => e.status === "running");
  // Durations of running executions grow: redraw every second while one runs.
  useInterval(() => anyRunning && setNow(Date.now()), 1000);

  const loadJob = async (signal?: AbortSignal) => {
    try {
      setJob(await api.job(name, signal));
      setMissing("");
    } catch (err) {
      if (signal?.aborted) return;
      const gone = err instanceof ApiError && err.status === 404;
      setMissing(gone ? `There is no job named ${name}.` : `${errorText(err)} (retrying)`);
      // A failing or unreachable server (a leader election, say): read everything again shortly.
      if (!gone && !(err instanceof ApiError && err.status === 401)) setTimeout(() => setTick((t) => t + 1), 3000);
    }
  };
  const loadExecutions = async (signal?: AbortSignal) => {
    const seen = events.begin();
    const fetched = await api.executions(name, signal).finally(() => events.drop(seen));
    setExecutions(events.end(seen, fetched));
  };
  const loadFires = async (signal?: AbortSignal) => {
    setFires(await api.nextFires(name, 10, signal));
  };
  useAbortable(
    async (signal) => {
      if (gone.current) return;
      await Promise.allSettled([loadJob(signal), loadExecutions(signal), loadFires(signal)]);
      // The page shows once all of it is here, so nothing is still being read about a job the user sees.
      if (!signal.aborted) setReady(true);
    },
    [name, tick],
  );
  const refreshJob = useThrottled(() => !gone.current && void loadJob(), 300);
  const refreshExecutions = useThrottled(
    () => !gone.current && void loadExecutions().catch(() => undefined),
    1000,
  );

  useHub((message) => {
    if (message.type === "resync") return setTick((t) => t + 1);
    if (message.job !== name) {
      // Another job's change may add or remove a fan-in edge to this one.
      if (message.type.startsWith("job.")) {
        const other = message.data as Job | null;
        const mentions = (other?.depends_on ?? []).some((d) => d.job === name);
        const listed = (job?.depended_on_by ?? []).includes(message.job);
        if (mentions || listed) refreshJob();
      }
      return;
    }
    if (message.type === "job.deleted") {
      gone.current = true;
      setMissing(`${name} was deleted.`);
      setJob(null);
    } else if (message.type.startsWith("job.")) {
      gone.current = false;
      setJob(message.data as Job);
      void loadFires().catch(() => undefined);
    } else if (message.type.startsWith("execution.")) {
      const execution = message.data as Execution;
      if (execution?.id) {
        events.push(execution);
        setExecutions((list) => upsert(list ?? [], execution));
      }
      refreshJob();
      if (message.type !== "execution.started") refreshExecutions();
    }
  });

  const act = async (what: string, action: () => Promise<unknown>, after?: () => void) => {
    try {
      await action();
      toast(what);
      after?.();
    } catch (err) {
      toastError(`${what.split(" ")[0]} failed`, err);
    }
  };
  const run = (force: boolean) =>
    act(force ? `Force run of ${name} started` : `Run of ${name} started`, () => api.runJob(name, force), () => {
      void loadExecutions().catch(() => undefined);
      refreshJob();
    });
  const toggle = () =>
    act(job?.disabled ? `Enabled ${name}` : `Disabled ${name}`, async () => setJob(await api.toggleJob(name)));
  const remove = () =>
    act(`Deleted ${name}`, () => api.deleteJob(name), () => navigate("#/jobs"));

  if (!job || !ready) {
    if (!missing) {
      return (
        <main id="main" tabIndex={-1} aria-busy="true">
          <p class="muted">Loading {name}…</p>
        </main>
      );
    }
    return (
      <main id="main" tabIndex={-1}>
        <h1>{name}</h1>
        {missing ? (
          <p role="alert" class="error">
            {missing} <a href="#/jobs">Back to the jobs</a>
          </p>
        ) : (
          <p class="muted">Loading…</p>
        )}
      </main>
    );
  }

  const parents: GraphEdge[] = [
    ...(job.parent_job ? [{ job: job.parent_job, label: "parent_job" }] : []),
    ...(job.depends_on ?? []).map((d) => ({ job: d.job, label: `depends_on, on ${d.on}` })),
  ];
  const children: GraphEdge[] = [
    ...(job.dependent_jobs ?? []).map((c) => ({ job: c, label: "dependent_jobs" })),
    ...(job.depended_on_by ?? []).map((c) => ({ job: c, label: "depends_on (fan-in)" })),
  ];
  const shown = (executions ?? []).slice(0, showAll ? undefined : SHOWN_EXECUTIONS);
  const selected = (executions ?? []).find((e) => e.id === chosen) ?? null;
  const backoff = job.retry_backoff;

  return (
    <main id="main" tabIndex={-1}>
      <div class="title-row">
        <h1>{name}</h1>
        <span data-testid="job-status" class="job-status">
          <Status value={job.status} />
          {anyRunning && job.status !== "running" && <Status value="running" />}
          {job.disabled ? <span class="badge badge-disabled">disabled</span> : <span class="badge badge-enabled">enabled</span>}
        </span>
      </div>
      {job.displayname && <p class="lead">{job.displayname}</p>}
      {missing && <p role="alert" class="error">{missing}</p>}
      <div class="actions">
        {canOperate(me) && (
          <>
            <button type="button" class="primary" onClick={() => void run(false)}>
              Run now
            </button>
            <button type="button" onClick={() => void run(true)} title="Run even if a run is in progress and the job forbids overlap">
              Force run
            </button>
            <button type="button" onClick={() => void toggle()}>
              {job.disabled ? "Enable" : "Disable"}
            </button>
          </>
        )}
        {isAdmin(me) && (
          <>
            <button type="button" onClick={() => navigate(jobHref(name, true))}>
              Edit
            </button>
            <button type="button" class="danger" onClick={() => setConfirming(true)}>
              Delete
            </button>
          </>
        )}
      </div>

      <div class="grid-2">
        <section class="panel">
          <h2>Summary</h2>
          <dl class="summary" data-testid="job-summary">
            <dt>Schedule</dt>
            <dd>
              <code>{job.schedule || "—"}</code>
            </dd>
            <dt>Timezone</dt>
            <dd>{job.timezone || "UTC (server default)"}</dd>
            <dt>Executor</dt>
            <dd>
              <code>{job.executor || "—"}</code>
              <ExecutorConfig config={job.executor_config} />
            </dd>
            <dt>State</dt>
            <dd>{job.disabled ? "disabled" : "enabled"}</dd>
            <dt>Tags</dt>
            <dd>
              <Tags tags={job.tags} />
            </dd>
            <dt>Metadata</dt>
            <dd>
              <Tags tags={job.metadata} />
            </dd>
            <dt>Concurrency</dt>
            <dd>{job.concurrency || "allow"}</dd>
            <dt>Misfire policy</dt>
            <dd>
              {job.misfire_policy || "run_once"}
              {job.starting_deadline ? `, deadline ${job.starting_deadline}` : ""}, at most {job.misfire_max ?? 10}
            </dd>
            <dt>Retries</dt>
            <dd>
              {job.retries ?? 0}
              {backoff
                ? `, backoff ${backoff.initial ?? "1s"} ×${backoff.multiplier ?? 2} up to ${backoff.max ?? "5m"}${backoff.jitter === false ? "" : " with jitter"}`
                : ""}
              {job.retry_on_other_node ? ", on another node" : ""}
            </dd>
            <dt>Owner</dt>
            <dd>
              {job.owner || "—"} {job.owner_email && <a href={`mailto:${job.owner_email}`}>{job.owner_email}</a>}
            </dd>
            <dt>Runs</dt>
            <dd>
              {job.success_count ?? 0} succeeded, {job.error_count ?? 0} failed; last success{" "}
              <Time value={job.last_success} relative />, last error <Time value={job.last_error} relative />
            </dd>
            <dt>Notify on</dt>
            <dd>{job.notify_on || "always"}</dd>
            {(isSet(job.starts_at) || isSet(job.expires_at)) && (
              <>
                <dt>Active</dt>
                <dd>
                  from <Time value={job.starts_at} empty="the start" /> until <Time value={job.expires_at} empty="forever" />
                </dd>
              </>
            )}
            {job.ephemeral && (
              <>
                <dt>Ephemeral</dt>
                <dd>deleted after its first successful run</dd>
              </>
            )}
          </dl>
        </section>
        <section class="panel">
          <h2>Next fires</h2>
          <Fires fires={fires ?? []} testId="next-fires" />
          {fires && fires.length === 0 && (
            <p class="muted">{job.disabled ? "Disabled: no fires." : "No upcoming fires (run on demand or by dependencies)."}</p>
          )}
          <h2>Dependencies</h2>
          <DependencyGraph name={name} parents={parents} children={children} />
        </section>
      </div>

      <section class="panel">
        <h2>Executions</h2>
        {executions && executions.length === 0 && <p class="muted">No executions yet.</p>}
        <div class="table-wrap" hidden={!executions || executions.length === 0}>
          <table class="executions">
            <thead>
              <tr>
                <th scope="col">Status</th>
                <th scope="col">Scheduled</th>
                <th scope="col">Started</th>
                <th scope="col">Duration</th>
                <th scope="col">Attempt</th>
                <th scope="col">Node</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {shown.map((e) => {
                const ran = e.status !== "missed" && e.status !== "skipped";
                return (
                  <tr
                    key={e.id}
                    data-testid="execution-row"
                    data-execution={e.id}
                    data-status={e.status}
                    class={`clickable${e.id === chosen ? " chosen" : ""}`}
                    onClick={() => ran && setChosen(e.id)}
                  >
                    <td>
                      <Status value={e.status} />
                    </td>
                    <td>
                      <Time value={e.scheduled_at} empty="manual" />
                    </td>
                    <td>{ran ? <Time value={e.started_at} /> : <span class="muted">did not run</span>}</td>
                    <td>{ran && isSet(e.started_at) ? duration(e.started_at, e.finished_at) : "—"}</td>
                    <td>{e.attempt ?? 1}</td>
                    <td>{e.node_name || <span class="muted">—</span>}</td>
                    <td class="row-actions">
                      {ran && (
                        <button
                          type="button"
                          aria-pressed={e.id === chosen}
                          onClick={(ev) => {
                            ev.stopPropagation();
                            setChosen(e.id);
                          }}
                        >
                          Output
                        </button>
                      )}
                      {e.status === "running" && canOperate(me) && (
                        <button
                          type="button"
                          class="danger"
                          onClick={(ev) => {
                            ev.stopPropagation();
                            void cancelExecution(e);
                          }}
                        >
                          Cancel execution
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
        {executions && executions.length > SHOWN_EXECUTIONS && !showAll && (
          <button type="button" onClick={() => setShowAll(true)}>
            Show all {executions.length} executions
          </button>
        )}
        {selected && (
          <div class="output-panel">
            <h3>
              Output of the run started <Time value={selected.started_at} /> <Status value={selected.status} />
            </h3>
            <Output
              key={selected.id}
              execution={selected}
              onEnd={(record) => setExecutions((list) => upsert(list ?? [], record))}
            />
          </div>
        )}
      </section>
      {confirming && (
        <ConfirmDialog
          title={`Delete ${name}?`}
          onCancel={() => setConfirming(false)}
          onConfirm={() => {
            setConfirming(false);
            void remove();
          }}
        >
          <p>The job and its execution history will be deleted. This cannot be undone.</p>
        </ConfirmDialog>
      )}
    </main>
  );
}

function ExecutorConfig({ config }: { config: Record<string, string> | null | undefined }) {
  const entries = Object.entries(config ?? {});
  if (!entries.length) return null;
  return (
    <dl class="config">
      {entries.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>
            <code>{/pass|secret|token/i.test(k) ? "••••" : v}</code>
          </dd>
        </div>
      ))}
    </dl>
  );
}

