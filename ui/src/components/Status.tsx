/** A job's or an execution's status as a colored badge ("" means the job never ran). */
export function Status({ value }: { value: string | undefined }) {
  const text = value || "never ran";
  return <span class={`badge badge-${value || "none"}`}>{text}</span>;
}
