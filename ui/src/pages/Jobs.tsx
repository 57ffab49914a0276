import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, errorText, isAbort, listJobs, type JobQuery } from "../api";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { Pager } from "../components/Pager";
import { Status } from "../components/Status";
import { Time } from "../components/Time";
import { useHub, useThrottled } from "../hooks";
import { jobHref } from "../router";
import { canOperate, isAdmin } from "../session";
import { toast } from "../toast";
import type { Job, Me } from "../types";

interface Filters {
  q: string;
  status: string;
  enabled: "" | "true" | "false";
  tag: string;
  metadata: string;
  sort: string;
  order: "ASC" | "DESC";
  start: number;
  perPage: number;
}

// Kept across visits to the list in this tab, so coming back from a job shows the same page.
let remembered: Filters = {
  q: "",
  status: "",
  enabled: "",
  tag: "",
  metadata: "",
  sort: "name",
  order: "ASC",
  start: 0,
  perPage: 25,
};

const COLUMNS: { label: string; sort?: string }[] = [
  { label: "Name", sort: "name" },
  { label: "Status", sort: "status" },
  { label: "Schedule" },
  { label: "Last success", sort: "last_success" },
  { label: "Last error", sort: "last_error" },
  { label: "Next run", sort: "next" },
];

/** `k=v, k2=v2` as a map; entries without "=" are ignored until they are complete. */
function parsePairs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

function toQuery(f: Filters): JobQuery {
  return {
    start: f.start,
    end: f.start + f.perPage,
    sort: f.sort,
    order: f.order,
    q: f.q.trim(),
    status: f.status,
    // "Enabled" means not disabled.
    disabled: f.enabled === "" ? "" : f.enabled === "true" ? "false" : "true",
    tags: parsePairs(f.tag),
    metadata: parsePairs(f.metadata),
  };
}

export function Jobs({ me }: { me: Me }) {
  const [filters, setFiltersState] = useState<Filters>(remembered);
  const [data, setData] = useState<{ jobs: Job[]; total: number } | null>(null);
  const [error, setError] = useState("");
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [confirming, setConfirming] = useState(false);
  const [reload, setReload] = useState(0);
  const typing = useRef(false);
  const seq = useRef(0);

  const setFilters = (change: Partial<Filters>, typed = false) => {
    typing.current = typed;
    setFiltersState((f) => {
      const next = { ...f, ...change };
      remembered = next;
      return next;
    });
  };

  // One request per settled change: typing waits ~200 ms, clicks go at once; older answers are dropped.
  useEffect(() => {
    const controller = new AbortController();
    const mine = ++seq.current;
    const timer = setTimeout(
      () => {
        listJobs(toQuery(filters), controller.signal)
          .then((page) => {
            if (mine !== seq.current) return;
            setData(page);
            setError("");
            // A page past the end (after deletions): go back to the last one.
            if (page.jobs.length === 0 && page.total > 0 && filters.start > 0) {
              setFilters({ start: Math.max(0, Math.floor((page.total - 1) / filters.perPage) * filters.perPage) });
            }
          })
          .catch((err: unknown) => {
            if (isAbort(err) || mine !== seq.current) return;
            setError(errorText(err));
            // Retry on our own when the server is unreachable or failing: a cluster may be electing a leader.
            if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) {
              setTimeout(() => mine === seq.current && setReload((r) => r + 1), 3000);
            }
          });
      },
      typing.current ? 200 : 0,
    );
    typing.current = false;
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [filters, reload]);

  const refresh = useThrottled(() => setReload((r) => r + 1), 400);
  useHub((message) => {
    if (message.type === "resync") {
      setReload((r) => r + 1);
      return;
    }
    if (message.type === "job.deleted") {
      setData((d) => {
        if (!d) return d;
        const jobs = d.jobs.filter((j) => j.name !== message.job);
        return { jobs, total: d.total - (d.jobs.length - jobs.length) };
      });
    }
    if (message.type.startsWith("job.") || message.type.startsWith("execution.")) refresh();
  });

  const jobs = data?.jobs ?? [];
  const onPage = jobs.map((j) => j.name);
  const chosen = onPage.filter((n) => selected.has(n));
  const allChecked = onPage.length > 0 && chosen.length === onPage.length;
  const toggleOne = (name: string, on: boolean) => {
    const next = new Set(selected);
    if (on) next.add(name);
    else next.delete(name);
    setSelected(next);
  };

  const bulk = async (what: string, action: (name: string) => Promise<unknown>) => {
    const names = chosen;
    const results = await Promise.allSettled(names.map(action));
    const failed = results
      .map((r, i) => (r.status === "rejected" ? `${names[i]}: ${errorText(r.reason)}` : ""))
      .filter(Boolean);
    const done = names.length - failed.length;
    if (failed.length) toast(`${what} ${done} of ${names.length} jobs. Failed: ${failed.join("; ")}`, "error");
    else toast(`${what} ${done} job${done === 1 ? "" : "s"}`);
    setReload((r) => r + 1);
  };

  const sortBy = (column: string) => {
    const order = filters.sort === column && filters.order === "ASC" ? "DESC" : "ASC";
    setFilters({ sort: column, order, start: 0 });
  };

  return (
    <main id="main" tabIndex={-1}>
      <div class="title-row">
        <h1>Jobs</h1>
        {isAdmin(me) && (
          <a class="button primary" href="#/jobs/new">
            New job
          </a>
        )}
      </div>
      <form class="filters" onSubmit={(e) => e.preventDefault()} role="search">
        <div class="field">
          <label for="f-search">Search</label>
          <input
            id="f-search"
            type="search"
            placeholder="name or display name"
            value={filters.q}
            onInput={(e) => setFilters({ q: e.currentTarget.value, start: 0 }, true)}
          />
        </div>
        <div class="field">
          <label for="f-status">Status</label>
          <select id="f-status" value={filters.status} onChange={(e) => setFilters({ status: e.currentTarget.value, start: 0 })}>
            <option value="">All</option>
            {["success", "failed", "partially_failed", "running", "untriggered"].map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="f-enabled">Enabled</label>
          <select
            id="f-enabled"
            value={filters.enabled}
            onChange={(e) => setFilters({ enabled: e.currentTarget.value as Filters["enabled"], start: 0 })}
          >
            <option value="">All</option>
            <option value="true">Enabled</option>
            <option value="false">Disabled</option>
          </select>
        </div>
        <div class="field">
          <label for="f-tag">Tag</label>
          <input
            id="f-tag"
            placeholder="key=value"
            value={filters.tag}
            onInput={(e) => setFilters({ tag: e.currentTarget.value, start: 0 }, true)}
          />
        </div>
        <div class="field">
          <label for="f-metadata">Metadata</label>
          <input
            id="f-metadata"
            placeholder="key=value"
            value={filters.metadata}
            onInput={(e) => setFilters({ metadata: e.currentTarget.value, start: 0 }, true)}
          />
        </div>
      </form>
      {error && (
        <p role="alert" class="error">
          Cannot load the jobs: {error}
        </p>
      )}
      {canOperate(me) && (
        <div class="bulk" aria-label="Actions on the selected jobs">
          <span class="muted">{chosen.length} selected</span>
          <button type="button" disabled={!chosen.length} onClick={() => void bulk("Ran", (n) => api.runJob(n))}>
            Run selected
          </button>
          <button type="button" disabled={!chosen.length} onClick={() => void bulk("Toggled", (n) => api.toggleJob(n))}>
            Toggle selected
          </button>
          {isAdmin(me) && (
            <button type="button" class="danger" disabled={!chosen.length} onClick={() => setConfirming(true)}>
              Delete selected
            </button>
          )}
        </div>
      )}
      <div class="table-wrap">
        <table class="jobs">
          <thead>
            <tr>
              {canOperate(me) && (
                <th scope="col" class="check">
                  <input
                    type="checkbox"
                    aria-label="Select all on page"
                    checked={allChecked}
                    onChange={(e) => {
                      const next = new Set(selected);
                      for (const n of onPage) {
                        if (e.currentTarget.checked) next.add(n);
                        else next.delete(n);
                      }
                      setSelected(next);
                    }}
                  />
                </th>
              )}
              {COLUMNS.map((c) => {
                const active = c.sort && filters.sort === c.sort;
                return (
                  <th
                    key={c.label}
                    scope="col"
                    aria-sort={active ? (filters.order === "ASC" ? "ascending" : "descending") : undefined}
                  >
                    {c.sort ? (
                      <button type="button" class="sort" onClick={() => sortBy(c.sort ?? "name")}>
                        {c.label}
                        <span aria-hidden="true" class="arrow">
                          {active ? (filters.order === "ASC" ? " ▲" : " ▼") : ""}
                        </span>
                      </button>
                    ) : (
                      c.label
                    )}
                  </th>
                );
              })}
            </tr>
          </thead>
          <tbody>
            {jobs.map((j) => (
              <tr key={j.name} data-testid="job-row" data-job={j.name} class={j.disabled ? "disabled" : ""}>
                {canOperate(me) && (
                  <td class="check">
                    <input
                      type="checkbox"
                      aria-label={`Select ${j.name}`}
                      checked={selected.has(j.name)}
                      onChange={(e) => toggleOne(j.name, e.currentTarget.checked)}
                    />
                  </td>
                )}
                <td>
                  <a href={jobHref(j.name)}>{j.name}</a>
                  {j.displayname && <div class="muted small">{j.displayname}</div>}
                </td>
                <td>
                  <Status value={j.status} />
                  {j.disabled && <span class="badge badge-disabled">disabled</span>}
                </td>
                <td>
                  <code>{j.schedule}</code>
                </td>
                <td>
                  <Time value={j.last_success} relative />
                </td>
                <td>
                  <Time value={j.last_error} relative />
                </td>
                <td>{j.disabled ? <span class="muted">disabled</span> : <Time value={j.next} relative empty="—" />}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {data && data.jobs.length === 0 && <p class="empty">No job matches.</p>}
      </div>
      {data && (
        <Pager
          id="jobs"
          start={filters.start}
          shown={jobs.length}
          total={data.total}
          perPage={filters.perPage}
          onStart={(start) => setFilters({ start })}
          onPerPage={(perPage) => setFilters({ perPage, start: 0 })}
        />
      )}
      {confirming && (
        <ConfirmDialog
          title={`Delete ${chosen.length} job${chosen.length === 1 ? "" : "s"}?`}
          onCancel={() => setConfirming(false)}
          onConfirm={() => {
            setConfirming(false);
            const names = chosen;
            void bulk("Deleted", (n) => api.deleteJob(n)).then(() => {
              const next = new Set(selected);
              for (const n of names) next.delete(n);
              setSelected(next);
            });
          }}
        >
          <p>{chosen.join(", ")} will be deleted with their execution history. This cannot be undone.</p>
        </ConfirmDialog>
      )}
    </main>
  );
}
