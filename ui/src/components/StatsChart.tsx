import type { Stats } from "../types";

/** Successes and failures per day as stacked bars, hand-drawn SVG (no chart library). */
export function StatsChart({ stats }: { stats: Stats["stats"] }) {
  const width = 600;
  const height = 160;
  const pad = { left: 32, bottom: 22, top: 8, right: 4 };
  const days = stats.length || 1;
  const max = Math.max(1, ...stats.map((d) => d.success_count + d.failed_count));
  const plotH = height - pad.top - pad.bottom;
  const slot = (width - pad.left - pad.right) / days;
  const bar = Math.max(2, slot * 0.7);
  const y = (n: number) => (n / max) * plotH;
  const totalOk = stats.reduce((n, d) => n + d.success_count, 0);
  const totalBad = stats.reduce((n, d) => n + d.failed_count, 0);
  return (
    <figure class="chart">
      <svg
        data-testid="stats-chart"
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`Executions over the last ${stats.length} days: ${totalOk} succeeded, ${totalBad} failed`}
      >
        <line x1={pad.left} x2={width - pad.right} y1={height - pad.bottom} y2={height - pad.bottom} class="axis" />
        <text x={pad.left - 4} y={pad.top + 8} class="tick" text-anchor="end">
          {max}
        </text>
        <text x={pad.left - 4} y={height - pad.bottom} class="tick" text-anchor="end">
          0
        </text>
        {stats.map((d, i) => {
          const x = pad.left + i * slot + (slot - bar) / 2;
          const ok = y(d.success_count);
          const bad = y(d.failed_count);
          const base = height - pad.bottom;
          const day = d.date.slice(0, 10);
          return (
            <g key={d.date}>
              <title>{`${day}: ${d.success_count} succeeded, ${d.failed_count} failed`}</title>
              <rect x={x} y={base - ok} width={bar} height={ok} class="ok" />
              <rect x={x} y={base - ok - bad} width={bar} height={bad} class="bad" />
              {(i % 7 === 0 || (i === stats.length - 1 && i % 7 >= 4)) && (
                <text x={x + bar / 2} y={height - 6} class="tick" text-anchor="middle">
                  {day.slice(5)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <figcaption>
        <span class="legend ok-mark" /> succeeded ({totalOk}) <span class="legend bad-mark" /> failed ({totalBad})
      </figcaption>
    </figure>
  );
}
