// Who is calling, and what their role lets them do (the server enforces the same rules).
import type { Me } from "./types";
import { createStore, useStore } from "./store";

export type SessionState =
  | { state: "loading" }
  | { state: "login" }
  | { state: "offline"; message: string }
  | { state: "in"; me: Me };

export const session = createStore<SessionState>({ state: "loading" });

export function useMe(): Me {
  const current = useStore(session);
  return current.state === "in" ? current.me : { name: "", role: "read", auth: true };
}

/** operator: run, force run, toggle, cancel. admin: everything. */
export function canOperate(me: Me): boolean {
  return me.role === "operator" || me.role === "admin";
}
export function isAdmin(me: Me): boolean {
  return me.role === "admin";
}
