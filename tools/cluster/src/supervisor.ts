import type { ServiceProcess } from '@handoff/service';
import { RestartBackoff, type RestartPolicy } from './restart-policy.js';

/**
 * One service of the local cluster kept running: when its process dies while the cluster is up,
 * it is started again (same name, same port, same flags) after a backoff
 * ({@link RestartBackoff}), until the policy gives up. Every step is reported as a
 * {@link SupervisionEvent}; stopping cancels a pending restart and kills a start in progress, so
 * nothing outlives {@link SupervisedService.stop}.
 */

/** What happened to a supervised service (the launcher prints these). */
export type SupervisionEvent =
  /** It died; `restart` is the number of the restart that follows after `delayMs` (null: none). */
  | {
      readonly kind: 'exited';
      readonly service: string;
      readonly code: number | null;
      readonly signal: NodeJS.Signals | null;
      readonly restart: number | null;
      readonly delayMs: number;
    }
  /** Restart number `restart` serves again. */
  | {
      readonly kind: 'restarted';
      readonly service: string;
      readonly restart: number;
      readonly pid: number;
      readonly address: string;
    }
  /** Restart number `restart` did not come up; another follows after `delayMs` (null: none). */
  | {
      readonly kind: 'restart-failed';
      readonly service: string;
      readonly restart: number;
      readonly error: string;
      readonly next: number | null;
      readonly delayMs: number;
    }
  /** It crashed `crashes` times within `windowMs`: it stays down. */
  | {
      readonly kind: 'gave-up';
      readonly service: string;
      readonly crashes: number;
      readonly windowMs: number;
    };

/**
 * Starts the service's process; `address` is where it listened before (null for the first
 * start), so a restart binds the same port. Must reject with the process gone when `signal`
 * aborts.
 */
export type StartService = (signal: AbortSignal, address: string | null) => Promise<ServiceProcess>;

/** One supervised service. */
export class SupervisedService {
  private proc: ServiceProcess | null = null;
  private address: string | null = null;
  private upSince = 0;
  private restarts = 0;
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;
  private starting: { abort: AbortController; done: Promise<void> } | null = null;
  private readonly backoff: RestartBackoff | null;

  /**
   * @param policy - how to restart it; null: a death is reported and the service stays down
   */
  constructor(
    readonly name: string,
    private readonly start: StartService,
    private readonly policy: RestartPolicy | null,
    private readonly onEvent: (e: SupervisionEvent) => void = () => undefined,
  ) {
    this.backoff = policy === null ? null : new RestartBackoff(policy);
  }

  /** The process serving now (null while it is down or restarting). */
  get current(): ServiceProcess | null {
    return this.proc;
  }

  /**
   * The first start. Its failure is the caller's (no restart: a cluster that cannot start at
   * all says so at once).
   */
  async begin(): Promise<ServiceProcess> {
    const proc = await this.start(new AbortController().signal, null);
    this.adopt(proc);
    return proc;
  }

  /**
   * Stops supervising: cancels a pending restart, kills a start in progress, then stops the
   * process (SIGTERM, SIGKILL after `timeoutMs`).
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    if (this.starting !== null) {
      this.starting.abort.abort();
      await this.starting.done;
    }
    await this.proc?.stop(timeoutMs);
  }

  private adopt(proc: ServiceProcess): void {
    this.proc = proc;
    this.address = proc.address;
    this.upSince = performance.now();
    proc.child.once('exit', (code, signal) => {
      if (this.stopping || this.proc !== proc) return;
      this.proc = null;
      const decision = this.backoff?.crashed(performance.now(), this.upSince);
      if (decision === undefined) {
        this.onEvent({
          kind: 'exited',
          service: this.name,
          code,
          signal,
          restart: null,
          delayMs: 0,
        });
        return;
      }
      if (!decision.restart) {
        this.onEvent({
          kind: 'exited',
          service: this.name,
          code,
          signal,
          restart: null,
          delayMs: 0,
        });
        this.giveUp(decision.crashes);
        return;
      }
      this.onEvent({
        kind: 'exited',
        service: this.name,
        code,
        signal,
        restart: this.restarts + 1,
        delayMs: decision.delayMs,
      });
      this.schedule(decision.delayMs);
    });
  }

  private giveUp(crashes: number): void {
    this.onEvent({
      kind: 'gave-up',
      service: this.name,
      crashes,
      windowMs: this.policy!.windowMs,
    });
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      const abort = new AbortController();
      const done = this.restart(abort.signal).finally(() => (this.starting = null));
      this.starting = { abort, done };
    }, delayMs);
  }

  /** One restart attempt; a failed one counts as a crash. Never rejects. */
  private async restart(signal: AbortSignal): Promise<void> {
    const n = ++this.restarts;
    const attempt = performance.now();
    let proc: ServiceProcess;
    try {
      proc = await this.start(signal, this.address);
    } catch (err) {
      if (this.stopping) return;
      const decision = this.backoff!.crashed(performance.now(), attempt);
      this.onEvent({
        kind: 'restart-failed',
        service: this.name,
        restart: n,
        error: (err as Error).message,
        next: decision.restart ? n + 1 : null,
        delayMs: decision.restart ? decision.delayMs : 0,
      });
      if (decision.restart) this.schedule(decision.delayMs);
      else this.giveUp(decision.crashes);
      return;
    }
    if (this.stopping) {
      await proc.stop(3000);
      return;
    }
    this.adopt(proc);
    this.onEvent({
      kind: 'restarted',
      service: this.name,
      restart: n,
      pid: proc.pid,
      address: proc.address,
    });
  }
}
