// A tiny hash router: routes live in location.hash so links can be shared and the server needs one page.
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "dashboard" }
  | { page: "jobs" }
  | { page: "new" }
  | { page: "job"; name: string }
  | { page: "edit"; name: string }
  | { page: "busy" }
  | { page: "members" }
  | { page: "settings" }
  | { page: "audit" }
  | { page: "missing"; path: string };

export function parseHash(hash: string): Route {
  const path = hash.replace(/^#/, "").replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  const [first, second, third] = parts;
  if (parts.length === 0) return { page: "dashboard" };
  if (first === "jobs") {
    if (parts.length === 1) return { page: "jobs" };
    if (second === "new" && parts.length === 2) return { page: "new" };
    if (second !== undefined && parts.length === 2) return { page: "job", name: second };
    if (second !== undefined && third === "edit" && parts.length === 3) return { page: "edit", name: second };
  }
  if (parts.length === 1 && (first === "busy" || first === "members" || first === "settings" || first === "audit")) {
    return { page: first };
  }
  return { page: "missing", path };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseHash(location.hash));
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function jobHref(name: string, edit = false): string {
  return `#/jobs/${encodeURIComponent(name)}${edit ? "/edit" : ""}`;
}

export function navigate(hash: string): void {
  location.hash = hash;
}
