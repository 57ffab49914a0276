import { useState } from "preact/hooks";
import { ApiError, api, errorText, setToken } from "../api";
import type { Me } from "../types";

/** Shown whenever /v1/me answers 401: paste an API token; it is checked before it is kept. */
export function Login({ onIn }: { onIn: (me: Me) => void }) {
  const [token, setTokenText] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    const candidate = token.trim();
    if (!candidate) {
      setError("Paste an API token first.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      const me = await api.me(candidate);
      setToken(candidate);
      onIn(me);
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "The server refused this token: check it, or ask an admin for a new one."
          : `Cannot log in: ${errorText(err)}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="center-box login">
      <h1>dkron-nats</h1>
      <p>This server requires an API token.</p>
      <form onSubmit={submit} class="stack">
        <label for="login-token">API token</label>
        <input
          id="login-token"
          type="password"
          autoComplete="off"
          spellcheck={false}
          value={token}
          onInput={(e) => setTokenText(e.currentTarget.value)}
          autoFocus
        />
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          Log in
        </button>
      </form>
    </main>
  );
}
