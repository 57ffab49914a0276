import { useState } from "preact/hooks";
import { api, countJobs } from "../api";
import { StatsChart } from "../components/StatsChart";
import { Time } from "../components/Time";
import { useEventBuffer } from "../executions";
import { useAbortable, useHub, useInterval, useThrottled } from "../hooks";
import { jobHref } from "../router";
import type { Execution, Member, Stats } from "../types";
import { upsertRunning } from "./Busy";

const COUNTS: { id: string; label: string; status?: string }[] = [
  { id: "count-total", label: "Jobs" },
  { id: "count-success", label: "Succeeded", status: "success" },
  { id: "count-failed", label: "Failed", status: "failed" },
  { id: "count-untriggered", label: "Never ran", status: "untriggered" },
];

export function Dashboard() {
  const [counts, setCounts] = useState<Record<string, number>>({});
  const [stats, setStats] = useState<Stats["stats"] | null>(null);
  const [members, setMembers] = useState<Member[] | null>(null);
  const [leader, setLeader] = useState<string | null>(null);
  const [running, setRunning] = useState<Execution[] | null>(null);
  const [tick, setTick] = useState(0);
  const events = useEventBuffer();

  // Counts and the chart: one small request per status (X-Total-Count), never the jobs themselves.
  const loadCounts = async (signal?: AbortSignal) => {
    const values = await Promise.all(COUNTS.map((c) => countJobs(c.status ? { status: c.status } : {}, signal)));
    setCounts(Object.fromEntries(COUNTS.map((c, i) => [c.id, values[i] ?? 0])));
  };
  const loadCluster = async (signal?: AbortSignal) => {
    const [m, l] = await Promise.all([api.members(signal), api.leader(signal).catch(() => null)]);
    setMembers(m);
    setLeader(l?.Name ?? null);
  };
  useAbortable(
    async (signal) => {
      await Promise.all([
        loadCounts(signal),
        api.stats(30, signal).then((s) => setStats(s.stats)),
        (async () => {
          const seen = events.begin();
          const fetched = await api.busy(signal).finally(() => events.drop(seen));
          setRunning(events.end(seen, fetched).filter((e) => e.status === "running"));
        })(),
        loadCluster(signal),
      ]);
    },
    [tick],
  );
  const refreshCounts = useThrottled(() => void loadCounts().catch(() => undefined), 1000);
  const refreshStats = useThrottled(() => void api.stats(30).then((s) => setStats(s.stats)).catch(() => undefined), 5000);
  // Members and the leader have no events: a slow poll.
  useInterval(() => void loadCluster().catch(() => undefined), 15_000);
  useHub((message) => {
    if (message.type === "resync") setTick((t) => t + 1);
    else if (message.type.startsWith("job.")) refreshCounts();
    else if (message.type.startsWith("execution.")) {
      refreshCounts();
      if (message.type === "execution.finished") refreshStats();
      events.push(message.data as Execution);
      setRunning((list) => upsertRunning(list ?? [], message.data as Execution));
    }
  });

  return (
    <main id="main" tabIndex={-1}>
      <h1>Dashboard</h1>
      <section class="cards" aria-label="Jobs by status">
        <div class="card">
          <div class="card-label">Leader</div>
          <div class="card-value small" data-testid="leader">
            {leader ?? (members ? "no leader" : "…")}
          </div>
        </div>
        <a class="card card-running" href="#/busy">
          <div class="card-label">Running</div>
          {/* Jobs with an execution running now (a job's status keeps its last result, as in Dkron). */}
          <div class="card-value" data-testid="count-running">
            {running === null ? "…" : String(new Set(running.map((e) => e.job_name)).size)}
          </div>
        </a>
        {COUNTS.map((c) => (
          <a class={`card card-${c.status ?? "total"}`} key={c.id} href="#/jobs">
            <div class="card-label">{c.label}</div>
            <div class="card-value" data-testid={c.id}>
              {counts[c.id] === undefined ? "…" : String(counts[c.id])}
            </div>
          </a>
        ))}
      </section>
      <div class="grid-2">
        <section class="panel">
          <h2>Last 30 days</h2>
          {stats ? <StatsChart stats={stats} /> : <p class="muted">Loading…</p>}
        </section>
        <section class="panel">
          <h2>Members</h2>
          <ul class="plain" data-testid="members-summary">
            {(members ?? []).map((m) => (
              <li key={m.Name}>
                <strong>{m.Name}</strong> {m.Name === leader && <span class="badge badge-leader">leader</span>}{" "}
                <span class={`badge badge-${m.statusText ?? "none"}`}>{m.statusText ?? m.Status}</span>{" "}
                <span class="muted">{m.Tags?.server === "true" ? "server" : "agent"}</span>
              </li>
            ))}
            {members && members.length === 0 && <li class="muted">no members</li>}
          </ul>
          <a href="#/members">All members</a>
        </section>
      </div>
      <section class="panel">
        <h2>Running now</h2>
        <ul class="plain" data-testid="running-list">
          {(running ?? []).map((e) => (
            <li key={e.id}>
              <a href={jobHref(e.job_name)}>{e.job_name}</a> on {e.node_name || "?"}, started{" "}
              <Time value={e.started_at} relative />
            </li>
          ))}
          {running && running.length === 0 && <li class="muted">Nothing is running.</li>}
        </ul>
        <a href="#/busy">Busy executions with live output</a>
      </section>
    </main>
  );
}
