import { useEffect, useState } from "preact/hooks";
import { setUnauthorizedHandler } from "./api";
import { identify, toLogin } from "./auth";
import { Toasts } from "./components/Toasts";
import { startHub } from "./events";
import { Login } from "./pages/Login";
import { Shell } from "./Shell";
import { session } from "./session";
import { useStore } from "./store";

export function App() {
  const current = useStore(session);
  const [booted, setBooted] = useState(false);
  useEffect(() => {
    setUnauthorizedHandler(toLogin);
    void identify().then(() => setBooted(true));
  }, []);
  useEffect(() => {
    if (current.state === "in") startHub(toLogin);
  }, [current.state]);

  let body;
  if (current.state === "in") body = <Shell me={current.me} />;
  else if (current.state === "login") body = <Login onIn={(me) => session.set({ state: "in", me })} />;
  else if (current.state === "offline")
    body = (
      <main class="center-box">
        <h1>dkron-nats</h1>
        <p role="alert">The server cannot be reached ({current.message}); retrying…</p>
      </main>
    );
  else body = <main class="center-box" aria-busy="true">{booted ? "" : "Loading…"}</main>;
  return (
    <>
      {body}
      <Toasts />
    </>
  );
}
