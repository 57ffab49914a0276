// The live event hub: one /v1/events stream for the whole app, fanned out to the screens that subscribe.
// Delivery is at most once, so after a reconnect subscribers get a "resync" and re-read what they show.
import { SseHttpError, followSse } from "./sse";
import type { HubEvent } from "./types";

/** A cluster event, or `{type: "resync"}` after a reconnect (events may have been missed). */
export type HubMessage = HubEvent;
type Listener = (message: HubMessage) => void;

const listeners = new Set<Listener>();
let stop: (() => void) | null = null;
let readyBefore = false;

export function subscribe(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function emit(message: HubMessage): void {
  for (const listener of [...listeners]) listener(message);
}

export function startHub(onUnauthorized: () => void): void {
  if (stop) return;
  readyBefore = false;
  stop = followSse(
    "/v1/events",
    ({ event, data }) => {
      if (event === "ready") {
        if (readyBefore) emit({ type: "resync", time: "", job: "", data: null });
        readyBefore = true;
        return;
      }
      try {
        const body = JSON.parse(data) as HubEvent;
        emit({ ...body, type: body.type || event });
      } catch {
        // A body that is not JSON carries nothing a screen could use.
      }
    },
    (err) => {
      if (err instanceof SseHttpError && err.status === 401) onUnauthorized();
    },
  );
}

export function stopHub(): void {
  stop?.();
  stop = null;
}
