import { useEffect, useState } from "preact/hooks";
import { logOut } from "./auth";
import { useRoute, type Route } from "./router";
import { isAdmin } from "./session";
import type { Me } from "./types";
import { Dashboard } from "./pages/Dashboard";
import { Jobs } from "./pages/Jobs";
import { JobPage } from "./pages/JobPage";
import { JobForm } from "./pages/JobForm";
import { Busy } from "./pages/Busy";
import { Members } from "./pages/Members";
import { Settings } from "./pages/Settings";
import { Audit } from "./pages/Audit";

const LINKS: { href: string; label: string; pages: Route["page"][]; admin?: boolean }[] = [
  { href: "#/", label: "Dashboard", pages: ["dashboard"] },
  { href: "#/jobs", label: "Jobs", pages: ["jobs", "job", "new", "edit"] },
  { href: "#/busy", label: "Busy", pages: ["busy"] },
  { href: "#/members", label: "Members", pages: ["members"] },
  { href: "#/settings", label: "Settings", pages: ["settings"] },
  { href: "#/audit", label: "Audit", pages: ["audit"], admin: true },
];

function Screen({ route, me }: { route: Route; me: Me }) {
  switch (route.page) {
    case "dashboard":
      return <Dashboard />;
    case "jobs":
      return <Jobs me={me} />;
    case "job":
      return <JobPage key={route.name} name={route.name} me={me} />;
    case "new":
      return <JobForm key="new" me={me} />;
    case "edit":
      return <JobForm key={`edit-${route.name}`} name={route.name} me={me} />;
    case "busy":
      return <Busy me={me} />;
    case "members":
      return <Members />;
    case "settings":
      return <Settings me={me} />;
    case "audit":
      return isAdmin(me) ? <Audit /> : <Denied />;
    default:
      return (
        <main id="main">
          <h1>Not found</h1>
          <p>
            Nothing lives at <code>#{route.path}</code>. <a href="#/">Back to the dashboard</a>.
          </p>
        </main>
      );
  }
}

function Denied() {
  return (
    <main id="main">
      <h1>Audit</h1>
      <p>Only admins may read the audit log.</p>
    </main>
  );
}

/** The frame of every screen: header with navigation (a "Menu" button on narrow screens), who am I, log out. */
export function Shell({ me }: { me: Me }) {
  const route = useRoute();
  const [open, setOpen] = useState(false);
  useEffect(() => {
    setOpen(false);
    window.scrollTo(0, 0);
    document.title = `${titleOf(route)} · dkron-nats`;
  }, [route]);
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById("main")?.focus();
      }}>
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/">
          dkron-nats
        </a>
        <button
          type="button"
          class="menu-button"
          aria-expanded={open}
          aria-controls="main-nav"
          onClick={() => setOpen(!open)}
        >
          Menu
        </button>
        <nav id="main-nav" class={open ? "open" : ""} aria-label="Main">
          <ul>
            {LINKS.filter((l) => !l.admin || isAdmin(me)).map((l) => (
              <li key={l.href}>
                <a href={l.href} aria-current={l.pages.includes(route.page) ? "page" : undefined}>
                  {l.label}
                </a>
              </li>
            ))}
          </ul>
          {me.auth && (
            <div class="who">
              <span data-testid="whoami" title={`role: ${me.role}`}>
                {me.name} <span class="muted">({me.role})</span>
              </span>
              <button type="button" onClick={logOut}>
                Log out
              </button>
            </div>
          )}
        </nav>
      </header>
      <Screen route={route} me={me} />
    </>
  );
}

function titleOf(route: Route): string {
  switch (route.page) {
    case "job":
      return route.name;
    case "edit":
      return `Edit ${route.name}`;
    case "new":
      return "New job";
    case "missing":
      return "Not found";
    default:
      return route.page[0]?.toUpperCase() + route.page.slice(1);
  }
}
