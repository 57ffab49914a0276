// Hooks shared by screens: live events, polling for what has no events, debouncing.
import { useEffect, useRef, useState } from "preact/hooks";
import { subscribe, type HubMessage } from "./events";

/** Subscribes to the event hub for the component's lifetime; the latest handler is always used. */
export function useHub(handler: (message: HubMessage) => void): void {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => subscribe((message) => ref.current(message)), []);
}

export function useInterval(callback: () => void, ms: number): void {
  const ref = useRef(callback);
  ref.current = callback;
  useEffect(() => {
    const timer = setInterval(() => ref.current(), ms);
    return () => clearInterval(timer);
  }, [ms]);
}

export function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

/** A function that runs `callback` at most once per `ms` (trailing), for bursts of events. */
export function useThrottled(callback: () => void, ms: number): () => void {
  const ref = useRef(callback);
  ref.current = callback;
  const timer = useRef<number | null>(null);
  useEffect(
    () => () => {
      if (timer.current !== null) clearTimeout(timer.current);
    },
    [],
  );
  const [fn] = useState(() => () => {
    if (timer.current !== null) return;
    timer.current = window.setTimeout(() => {
      timer.current = null;
      ref.current();
    }, ms);
  });
  return fn;
}

/** Runs an async loader when deps change, aborting the previous one; answers that arrive late are dropped. */
export function useAbortable(load: (signal: AbortSignal) => Promise<void>, deps: unknown[]): void {
  useEffect(() => {
    const controller = new AbortController();
    void load(controller.signal).catch(() => undefined);
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
}
