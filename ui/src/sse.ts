// Server-Sent Events read with fetch(): EventSource cannot send the Authorization header. Parses the
// `event:` / `data:` lines itself; comments (": keepalive") are ignored.
import { authHeaders } from "./api";

export interface SseMessage {
  event: string;
  data: string;
}

export class SseHttpError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

/** Reads one stream until the server closes it (resolves) or it fails (rejects). */
export async function readSse(
  url: string,
  onMessage: (message: SseMessage) => void,
  signal: AbortSignal,
): Promise<void> {
  const response = await fetch(url, {
    headers: { Accept: "text/event-stream", ...authHeaders() },
    signal,
    cache: "no-store",
  });
  if (!response.ok || !response.body) throw new SseHttpError(response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length) onMessage({ event: event || "message", data: data.join("\n") });
        event = "";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const fieldName = colon < 0 ? line : line.slice(0, colon);
        let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
        if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
        if (fieldName === "event") event = fieldValue;
        else if (fieldName === "data") data.push(fieldValue);
      }
    }
  }
}

/**
 * Keeps a stream open: reconnects with a growing delay (1 s doubling to 30 s, reset once a stream opened).
 * Returns a function that closes it for good.
 */
export function followSse(
  url: string,
  onMessage: (message: SseMessage) => void,
  onFailure?: (err: unknown) => void,
): () => void {
  const controller = new AbortController();
  let delay = 1000;
  const loop = async (): Promise<void> => {
    while (!controller.signal.aborted) {
      let opened = false;
      try {
        await readSse(
          url,
          (message) => {
            opened = true;
            onMessage(message);
          },
          controller.signal,
        );
      } catch (err) {
        if (controller.signal.aborted) return;
        onFailure?.(err);
      }
      if (opened) delay = 1000;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30_000);
    }
  };
  void loop();
  return () => controller.abort();
}
