import { isSet, localTime, relativeTime } from "../time";

/** A time in the browser's zone, the RFC 3339 value in its title; "never" for Dkron's zero time. */
export function Time({ value, relative = false, empty = "never" }: { value: string | null | undefined; relative?: boolean; empty?: string }) {
  if (!isSet(value)) return <span class="muted">{empty}</span>;
  return (
    <time dateTime={value} title={value}>
      {relative ? relativeTime(value) : localTime(value)}
    </time>
  );
}
