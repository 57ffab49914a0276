import type { Fire } from "../types";

/** Upcoming fire instants in the schedule's own zone, each with its UTC offset (shared by the job page and
 * the form's schedule preview). */
export function Fires({ fires, testId }: { fires: Fire[]; testId?: string }) {
  return (
    <ol class="fires" data-testid={testId}>
      {fires.map((f) => (
        <li key={f.utc}>
          <time dateTime={f.utc} title={f.utc}>
            {f.at.replace("T", " ").replace(/(\.\d+)?([+-]\d\d:\d\d|Z)$/, "")}
          </time>{" "}
          <span class="offset">
            UTC{f.utc_offset}
            {f.zone_abbreviation ? ` (${f.zone_abbreviation})` : ""}
          </span>
        </li>
      ))}
    </ol>
  );
}
