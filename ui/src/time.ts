// Times: shown in the browser's zone, with the exact RFC 3339 value in a title; Dkron's zero time means "never".
export const ZERO_TIME = "0001-01-01T00:00:00Z";

export function isSet(value: string | null | undefined): value is string {
  return !!value && !value.startsWith("0001-01-01");
}

const full = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function localTime(value: string): string {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : full.format(date);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function relativeTime(value: string, now = Date.now()): string {
  const seconds = Math.round((new Date(value).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relative.format(seconds, "second");
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

export function duration(from: string, to: string | null | undefined): string {
  const end = isSet(to) ? new Date(to).getTime() : Date.now();
  const ms = Math.max(0, end - new Date(from).getTime());
  if (ms < 1000) return `${ms} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
