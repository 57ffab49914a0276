// Signing in and out: the token lives in sessionStorage (gone with the tab) and any 401 returns to the login.
import { ApiError, api, errorText, setToken } from "./api";
import { stopHub } from "./events";
import { session } from "./session";

/** Asks /v1/me who we are: a 401 means the login screen, any other failure a retry a little later. */
export async function identify(): Promise<void> {
  try {
    const me = await api.me();
    session.set({ state: "in", me });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) toLogin();
    else {
      session.set({ state: "offline", message: errorText(err) });
      setTimeout(() => void identify(), 3000);
    }
  }
}

export function toLogin(): void {
  stopHub();
  if (session.get().state !== "login") session.set({ state: "login" });
}

export function logOut(): void {
  setToken(null);
  toLogin();
}
