import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText, isAbort } from "../api";
import { readSse } from "../sse";
import type { Execution } from "../types";

/**
 * An execution's output: streamed live (SSE over fetch) while it runs, the whole text once it has finished.
 * `onEnd` receives the final record the stream ends with.
 */
export function Output(props: { execution: Execution; onEnd?: (record: Execution) => void; compact?: boolean }) {
  const { execution } = props;
  const running = execution.status === "running";
  const [text, setText] = useState(execution.output ?? "");
  const [note, setNote] = useState("");
  const pre = useRef<HTMLPreElement>(null);
  const onEnd = useRef(props.onEnd);
  onEnd.current = props.onEnd;
  const stick = useRef(true);

  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const url = `/v1/jobs/${encodeURIComponent(execution.job_name)}/executions/${encodeURIComponent(execution.id)}/output`;
    const loadAll = async () => {
      const whole = await api.outputText(execution.job_name, execution.id, signal);
      if (!signal.aborted) setText(whole);
    };
    const run = async () => {
      if (!running) {
        await loadAll();
        return;
      }
      setNote("live");
      let streamed = "";
      let ended = false;
      await readSse(
        url,
        ({ event, data }) => {
          if (event === "output") {
            const chunk = (JSON.parse(data) as { output?: string }).output ?? "";
            streamed += chunk;
            setText(streamed);
          } else if (event === "end") {
            ended = true;
            setNote("");
            onEnd.current?.(JSON.parse(data) as Execution);
          }
        },
        signal,
      );
      // The stream closed without its end (a server went away): show what is stored.
      if (!ended && !signal.aborted) {
        setNote("");
        await loadAll();
      }
    };
    run().catch((err: unknown) => {
      if (!isAbort(err) && !signal.aborted) setNote(`output unavailable: ${errorText(err)}`);
    });
    return () => controller.abort();
  }, [execution.job_name, execution.id, running]);

  useEffect(() => {
    const el = pre.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [text]);

  return (
    <div class={`output-box${props.compact ? " compact" : ""}`}>
      {note && (
        <div class={note === "live" ? "live-note" : "muted"}>{note === "live" ? "● live output" : note}</div>
      )}
      <pre
        ref={pre}
        class="output"
        data-testid="output"
        tabIndex={0}
        aria-label={`Output of ${execution.job_name}`}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
        }}
      >
        {text || (running ? "(no output yet)" : "(no output)")}
      </pre>
    </div>
  );
}
