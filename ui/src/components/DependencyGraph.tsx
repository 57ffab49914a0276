import { jobHref } from "../router";

export interface GraphEdge {
  job: string;
  label: string;
}

/** Parents on the left, this job in the middle, children on the right: HTML boxes joined by SVG arrows. */
export function DependencyGraph(props: { name: string; parents: GraphEdge[]; children: GraphEdge[]; note?: string }) {
  const { parents, children } = props;
  const column = (title: string, edges: GraphEdge[]) => (
    <div class="graph-col">
      <h3>{title}</h3>
      {edges.length === 0 ? (
        <p class="muted">none</p>
      ) : (
        <ul>
          {edges.map((e) => (
            <li key={`${e.job}-${e.label}`} class="graph-node">
              <a href={jobHref(e.job)}>{e.job}</a>
              <span class="edge-label">{e.label}</span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
  const arrow = (
    <svg class="graph-arrow" viewBox="0 0 40 20" aria-hidden="true">
      <line x1="2" y1="10" x2="34" y2="10" />
      <polygon points="32,4 40,10 32,16" />
    </svg>
  );
  return (
    <div class="graph" data-testid="dependency-graph">
      {column("Parents", parents)}
      {arrow}
      <div class="graph-col">
        <h3>This job</h3>
        <div class="graph-node this">{props.name}</div>
      </div>
      {arrow}
      {column("Children", children)}
      {props.note && <p class="muted graph-note">{props.note}</p>}
    </div>
  );
}
