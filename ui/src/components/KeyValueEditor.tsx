export type Pair = [string, string];

/** Rows of key and value inputs for a map field (tags, metadata); every input has its own label. */
export function KeyValueEditor(props: {
  name: string;
  pairs: Pair[];
  onChange: (pairs: Pair[]) => void;
  keyLabel?: string;
  valueLabel?: string;
}) {
  const { name, pairs } = props;
  const keyLabel = props.keyLabel ?? "key";
  const valueLabel = props.valueLabel ?? "value";
  const update = (i: number, pair: Pair) => props.onChange(pairs.map((p, j) => (j === i ? pair : p)));
  return (
    <fieldset class="kv">
      <legend>{name}</legend>
      {pairs.map(([k, v], i) => (
        <div class="kv-row" key={i}>
          <input
            aria-label={`${name} ${keyLabel} ${i + 1}`}
            placeholder={keyLabel}
            value={k}
            onInput={(e) => update(i, [e.currentTarget.value, v])}
          />
          <input
            aria-label={`${name} ${valueLabel} ${i + 1}`}
            placeholder={valueLabel}
            value={v}
            onInput={(e) => update(i, [k, e.currentTarget.value])}
          />
          <button type="button" onClick={() => props.onChange(pairs.filter((_, j) => j !== i))}>
            Remove<span class="sr-only">{` ${name} ${i + 1}`}</span>
          </button>
        </div>
      ))}
      <button type="button" onClick={() => props.onChange([...pairs, ["", ""]])}>
        Add {name}
      </button>
    </fieldset>
  );
}

export function toPairs(map: Record<string, string> | null | undefined): Pair[] {
  return Object.entries(map ?? {});
}

export function fromPairs(pairs: Pair[]): Record<string, string> | null {
  const kept = pairs.filter(([k]) => k.trim() !== "");
  return kept.length ? Object.fromEntries(kept.map(([k, v]) => [k.trim(), v])) : null;
}
