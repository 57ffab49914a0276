import { useState } from "preact/hooks";
import { api, errorText } from "../api";
import { Pager } from "../components/Pager";
import { Time } from "../components/Time";
import { useAbortable } from "../hooks";
import { jobHref } from "../router";
import type { AuditEntry } from "../types";

export function Audit() {
  const [start, setStart] = useState(0);
  const [perPage, setPerPage] = useState(25);
  const [page, setPage] = useState<{ entries: AuditEntry[]; total: number } | null>(null);
  const [error, setError] = useState("");
  useAbortable(
    async (signal) => {
      try {
        setPage(await api.audit(start, start + perPage, signal));
        setError("");
      } catch (err) {
        if (!signal.aborted) setError(errorText(err));
      }
    },
    [start, perPage],
  );
  return (
    <main id="main" tabIndex={-1}>
      <h1>Audit</h1>
      <p class="muted">Every change made through the API, newest first.</p>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Who</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
            </tr>
          </thead>
          <tbody>
            {(page?.entries ?? []).map((e, i) => (
              <tr key={`${e.time}-${i}`} data-testid="audit-row">
                <td>
                  <Time value={e.time} />
                </td>
                <td>
                  {e.who} {e.role && <span class="muted">({e.role})</span>}
                </td>
                <td>
                  <code>{e.action}</code>
                </td>
                <td>{e.target && e.action.startsWith("job.") ? <a href={jobHref(e.target)}>{e.target}</a> : e.target}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {page && (
        <Pager
          id="audit"
          start={start}
          shown={page.entries.length}
          total={page.total}
          perPage={perPage}
          onStart={setStart}
          onPerPage={(n) => {
            setPerPage(n);
            setStart(0);
          }}
        />
      )}
    </main>
  );
}
