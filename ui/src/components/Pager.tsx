/** Paging controls shared by the Jobs list and the Audit log. */
export function Pager(props: {
  id: string;
  start: number;
  shown: number;
  total: number;
  perPage: number;
  onStart: (start: number) => void;
  onPerPage: (perPage: number) => void;
}) {
  const { start, shown, total, perPage } = props;
  const info = shown ? `${start + 1}\u2013${start + shown} of ${total}` : `0\u20130 of ${total}`;
  return (
    <div class="pager">
      <span data-testid="page-info" aria-live="polite">
        {info}
      </span>
      <button type="button" disabled={start <= 0} onClick={() => props.onStart(Math.max(0, start - perPage))}>
        Previous page
      </button>
      <button type="button" disabled={start + perPage >= total} onClick={() => props.onStart(start + perPage)}>
        Next page
      </button>
      <label class="inline" for={`${props.id}-per-page`}>
        Per page
      </label>
      <select
        id={`${props.id}-per-page`}
        value={String(perPage)}
        onChange={(e) => props.onPerPage(Number(e.currentTarget.value))}
      >
          {[25, 50, 100].map((n) => (
            <option key={n} value={String(n)}>
              {n}
            </option>
        ))}
      </select>
    </div>
  );
}
