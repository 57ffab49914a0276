import { useState } from "preact/hooks";
import { api, errorText } from "../api";
import { useAbortable, useInterval } from "../hooks";
import type { Member } from "../types";

export function Members() {
  const [members, setMembers] = useState<Member[] | null>(null);
  const [leader, setLeader] = useState<string | null>(null);
  const [error, setError] = useState("");
  const load = async (signal?: AbortSignal) => {
    try {
      const [m, l] = await Promise.all([api.members(signal), api.leader(signal).catch(() => null)]);
      setMembers(m);
      setLeader(l?.Name ?? null);
      setError("");
    } catch (err) {
      if (!signal?.aborted) setError(errorText(err));
    }
  };
  useAbortable(load, []);
  // No events exist for membership: poll slowly.
  useInterval(() => void load(), 10_000);
  return (
    <main id="main" tabIndex={-1}>
      <h1>Members</h1>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Address</th>
              <th scope="col">Role</th>
              <th scope="col">Status</th>
              <th scope="col">Running</th>
              <th scope="col">Partitions</th>
              <th scope="col">Tags</th>
            </tr>
          </thead>
          <tbody>
            {(members ?? []).map((m) => {
              const role = m.Tags?.server === "true" ? "server" : "agent";
              return (
                <tr key={m.Name} data-testid="member-row" data-member={m.Name}>
                  <td>
                    <strong>{m.Name}</strong>{" "}
                    {m.Name === leader && (
                      <span class="badge badge-leader" title="the current leader">
                        ★ leader
                      </span>
                    )}
                  </td>
                  <td>{m.Port ? `${m.Addr}:${m.Port}` : m.Addr}</td>
                  <td>{role}</td>
                  <td>
                    <span class={`badge badge-${m.statusText ?? "none"}`}>{m.statusText ?? String(m.Status)}</span>
                  </td>
                  <td data-testid="member-running">{slots(m)}</td>
                  <td data-testid="member-partitions">{role === "server" ? (m.Partitions ?? 0) : ""}</td>
                  <td>
                    <Tags tags={m.Tags} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {members && <p class="muted">{members.length} members; refreshed every 10 s.</p>}
    </main>
  );
}

/** "2", "2 of 4" with a slot limit, and how many wait for a free slot. */
function slots(m: Member): string {
  const running = m.ExecutionsRunning ?? 0;
  const limit = m.MaxConcurrentExecutions ? ` of ${m.MaxConcurrentExecutions}` : "";
  const queued = m.ExecutionsQueued ? `, ${m.ExecutionsQueued} waiting` : "";
  return `${running}${limit}${queued}`;
}

export function Tags({ tags }: { tags: Record<string, string> | null | undefined }) {
  const entries = Object.entries(tags ?? {});
  if (!entries.length) return <span class="muted">none</span>;
  return (
    <span class="tags">
      {entries.map(([k, v]) => (
        <code key={k} class="tag">
          {k}={v}
        </code>
      ))}
    </span>
  );
}
