import { useState } from "preact/hooks";
import { api, errorText } from "../api";
import { useAbortable } from "../hooks";
import { isAdmin } from "../session";
import { toast, toastError } from "../toast";
import type { Me, PauseState } from "../types";

export function Settings({ me }: { me: Me }) {
  const [state, setState] = useState<PauseState | null>(null);
  const [error, setError] = useState("");
  const load = async (signal?: AbortSignal) => {
    try {
      setState(await api.pauseState(signal));
      setError("");
    } catch (err) {
      if (!signal?.aborted) setError(errorText(err));
    }
  };
  useAbortable(load, []);
  const act = async (pause: boolean, scheduling: boolean) => {
    const what = scheduling ? "Scheduling" : "Submissions";
    try {
      await (pause ? api.pause(scheduling) : api.unpause(scheduling));
      toast(`${what} ${pause ? "paused" : "resumed"}`);
    } catch (err) {
      toastError(`Cannot ${pause ? "pause" : "resume"} ${what.toLowerCase()}`, err);
    }
    await load();
  };
  return (
    <main id="main" tabIndex={-1}>
      <h1>Settings</h1>
      <section class="panel">
        <h2>Pause</h2>
        {error && <p role="alert" class="error">{error}</p>}
        <p data-testid="pause-state">
          {state === null
            ? "…"
            : `Submissions: ${state.paused ? "paused (new runs are refused)" : "accepted"}. ` +
              `Scheduling: ${state.scheduling_paused ? "paused (no scheduled fires)" : "running"}.`}
        </p>
        {state && isAdmin(me) && (
          <div class="actions">
            <button type="button" onClick={() => void act(!state.paused, false)}>
              {state.paused ? "Resume submissions" : "Pause submissions"}
            </button>
            <button type="button" onClick={() => void act(!state.scheduling_paused, true)}>
              {state.scheduling_paused ? "Resume scheduling" : "Pause scheduling"}
            </button>
          </div>
        )}
        <p class="muted">
          Pausing submissions refuses every run (scheduled or manual); pausing scheduling stops scheduled fires
          while manual runs still work.
        </p>
      </section>
      <section class="panel">
        <h2>You</h2>
        <p>
          {me.auth ? (
            <>
              Logged in as <strong>{me.name}</strong> with the <strong>{me.role}</strong> role.
            </>
          ) : (
            <>Authentication is off: everyone is an admin.</>
          )}
        </p>
      </section>
    </main>
  );
}
