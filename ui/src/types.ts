// The API's shapes as the UI reads them (Dkron's JSON; see dkron_nats/http/render.py).
export type Role = "read" | "operator" | "admin";

export interface Me {
  name: string;
  role: Role | string;
  auth: boolean;
}

export interface Dependency {
  job: string;
  on: string;
}

export interface Job {
  id?: string;
  name: string;
  displayname?: string;
  timezone?: string;
  schedule?: string;
  owner?: string;
  owner_email?: string;
  success_count?: number;
  error_count?: number;
  last_success?: string | null;
  last_error?: string | null;
  disabled?: boolean;
  tags?: Record<string, string> | null;
  metadata?: Record<string, string> | null;
  retries?: number;
  dependent_jobs?: string[] | null;
  parent_job?: string;
  processors?: Record<string, Record<string, string>> | null;
  concurrency?: string;
  executor?: string;
  executor_config?: Record<string, string> | null;
  status?: string;
  next?: string | null;
  ephemeral?: boolean;
  starts_at?: string | null;
  expires_at?: string | null;
  misfire_policy?: string;
  starting_deadline?: string;
  misfire_max?: number;
  retry_backoff?: { initial?: string; max?: string; multiplier?: number; jitter?: boolean } | null;
  retry_on_other_node?: boolean;
  depends_on?: Dependency[] | null;
  /** Jobs whose depends_on names this one (its fan-in children). */
  depended_on_by?: string[] | null;
  history_limit?: number;
  history_max_age?: string;
  dst_policy?: { gap?: string; overlap?: string } | null;
  notify_on?: string;
  /** The variables a run (a NATS trigger, POST /v1/jobs/{job}/run) may set; nothing else. */
  parameters?: Parameter[] | null;
  /** The partition whose owner schedules it (GET /v1/partitions). */
  partition?: number;
}

export interface Parameter {
  name: string;
  /** Its values are masked in the audit log. */
  secret: boolean;
}

export interface Execution {
  id: string;
  job_name: string;
  started_at?: string | null;
  finished_at?: string | null;
  success?: boolean;
  output?: string;
  node_name?: string;
  group?: number;
  attempt?: number;
  scheduled_at?: string | null;
  status: string;
  output_truncated?: boolean;
}

export interface Fire {
  at: string;
  utc: string;
  utc_offset: string;
  zone_abbreviation?: string;
}

export interface Member {
  Name: string;
  Addr: string;
  Port: number;
  Tags: Record<string, string> | null;
  Status: number;
  statusText?: string;
  id?: string;
  /** `--max-concurrent-executions` (0: no limit) and what the node's last heartbeat counted. */
  MaxConcurrentExecutions?: number;
  ExecutionsRunning?: number;
  ExecutionsQueued?: number;
  /** Partitions of the job space a server schedules, at its last heartbeat. */
  Partitions?: number;
}

export interface Stats {
  stats: { date: string; success_count: number; failed_count: number }[];
}

export interface PauseState {
  paused: boolean;
  scheduling_paused: boolean;
}

export interface AuditEntry {
  time: string;
  who: string;
  role?: string;
  action: string;
  target?: string;
}

export interface HubEvent {
  type: string;
  time: string;
  job: string;
  data: unknown;
}
