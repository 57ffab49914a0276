// Outcomes of actions, announced in one role="status" region; errors keep the server's own words.
import { createStore } from "./store";
import { errorText } from "./api";

export interface Toast {
  id: number;
  text: string;
  kind: "ok" | "error";
}

export const toasts = createStore<Toast[]>([]);
let nextId = 1;

export function toast(text: string, kind: Toast["kind"] = "ok"): void {
  const id = nextId++;
  toasts.set([...toasts.get(), { id, text, kind }].slice(-4));
  setTimeout(() => dismiss(id), kind === "error" ? 10_000 : 6_000);
}

export function toastError(what: string, err: unknown): void {
  toast(`${what}: ${errorText(err)}`, "error");
}

export function dismiss(id: number): void {
  toasts.set(toasts.get().filter((t) => t.id !== id));
}
