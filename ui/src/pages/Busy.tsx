import { useState } from "preact/hooks";
import { api, errorText } from "../api";
import { Output } from "../components/Output";
import { Time } from "../components/Time";
import { useEventBuffer } from "../executions";
import { useAbortable, useHub } from "../hooks";
import { jobHref } from "../router";
import { canOperate } from "../session";
import { isSet } from "../time";
import { toast, toastError } from "../toast";
import type { Execution, Me } from "../types";

/** The running list after an execution event: started ones join, finished ones leave. */
export function upsertRunning(list: Execution[], execution: Execution): Execution[] {
  if (!execution || typeof execution !== "object" || !execution.id) return list;
  const others = list.filter((e) => e.id !== execution.id);
  return execution.status === "running" ? [execution, ...others] : others;
}

export async function cancelExecution(execution: Execution): Promise<void> {
  try {
    await api.cancel(execution.job_name, execution.id);
    toast(`Cancel requested for ${execution.job_name}`);
  } catch (err) {
    toastError(`Cannot cancel ${execution.job_name}`, err);
  }
}

export function Busy({ me }: { me: Me }) {
  const [running, setRunning] = useState<Execution[] | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  const events = useEventBuffer();
  useAbortable(
    async (signal) => {
      try {
        const seen = events.begin();
        const fetched = await api.busy(signal).finally(() => events.drop(seen));
        setRunning(events.end(seen, fetched).filter((e) => e.status === "running"));
        setError("");
      } catch (err) {
        if (!signal.aborted) setError(errorText(err));
      }
    },
    [tick],
  );
  useHub((message) => {
    if (message.type === "resync") setTick((t) => t + 1);
    else if (message.type.startsWith("execution.")) {
      events.push(message.data as Execution);
      setRunning((list) => upsertRunning(list ?? [], message.data as Execution));
    }
  });
  return (
    <main id="main" tabIndex={-1}>
      <h1>Busy</h1>
      <p class="muted">Executions running anywhere in the cluster, with their output as it is printed.</p>
      {error && <p role="alert" class="error">{error}</p>}
      {running && running.length === 0 && <p>Nothing is running.</p>}
      <ul class="plain busy-list">
        {(running ?? []).map((e) => (
          <li key={e.id} class="panel" data-testid="busy-row" data-execution={e.id}>
            <div class="row-head">
              <a href={jobHref(e.job_name)}>
                <strong>{e.job_name}</strong>
              </a>
              <span>
                on {e.node_name || "?"}, attempt {e.attempt ?? 1},{" "}
                {isSet(e.started_at) ? (
                  <>
                    started <Time value={e.started_at} relative />
                  </>
                ) : (
                  <span class="muted">waiting for a free slot</span>
                )}
              </span>
              {canOperate(me) && (
                <button type="button" class="danger" onClick={() => void cancelExecution(e)}>
                  Cancel execution
                </button>
              )}
            </div>
            <Output execution={e} compact />
          </li>
        ))}
      </ul>
    </main>
  );
}
