// Executions seen in events while a list was being fetched: an answer that left the server before an event
// must not hide what the event said (a run that started, or finished, in between).
import { useRef } from "preact/hooks";
import type { Execution } from "./types";

const finished = (e: Execution) => e.status !== "running";

/** The fetched list with the events applied: new executions join, a finish replaces a stale "running". */
export function mergeExecutions(fetched: Execution[], events: Execution[]): Execution[] {
  let list = fetched;
  for (const ex of events) {
    const at = list.findIndex((e) => e.id === ex.id);
    if (at < 0) list = [ex, ...list];
    else if (!finished(list[at] as Execution) && finished(ex)) list = list.map((e, i) => (i === at ? { ...e, ...ex } : e));
  }
  return list;
}

/** Records execution events while fetches are in flight (each its own record), to merge into their answers. */
export function useEventBuffer() {
  const active = useRef(new Set<Execution[]>());
  return {
    begin: (): Execution[] => {
      const seen: Execution[] = [];
      active.current.add(seen);
      return seen;
    },
    push: (ex: Execution) => {
      for (const seen of active.current) seen.push(ex);
    },
    /** Forgets a record whose fetch failed or was aborted. */
    drop: (seen: Execution[]) => {
      active.current.delete(seen);
    },
    end: (seen: Execution[], fetched: Execution[]): Execution[] => {
      active.current.delete(seen);
      return mergeExecutions(fetched, seen);
    },
  };
}
