import type { Command } from 'commander';
import { resolveGuest } from '../api/guest-image.js';
import { vms, type ConsoleSession, type VmView } from '../api/vms.js';
import type { CommandContext } from '../context.js';
import { EXIT } from '../errors.js';
import { parseDuration, parseSize } from '../output/units.js';
import type { CommandRunner } from './runner.js';
import { GUEST_HELP, parseArgs } from './guest-args.js';

/**
 * `vmctl vm run`: a guest as a command. The VM is created stopped, its console attached, then
 * started; the guest's output goes to stdout as it comes, stdin goes to the guest until it ends,
 * and vmctl waits for the power-off, removes the VM and exits with the guest's exit code. Every
 * way out removes the VM: a signal (SIGINT 130, SIGTERM 143), `--timeout` (124), a crash (1).
 */

/** Exit statuses of `vm run` beyond the guest's own code (as timeout(1) and shells use them). */
export const RUN_EXIT = { timeout: 124, sigint: 130, sigterm: 143 } as const;

/** Guest output kept for `--output json` (the last bytes; older output is dropped). */
const JSON_OUTPUT_LIMIT = 1024 * 1024;

interface RunOptions {
  guest: string;
  memory: string;
  shared?: boolean;
  vmm?: string;
  arg: string[];
  /** The run's time limit as given (main.ts hands a `--timeout` here, not to the call deadline). */
  timeout?: string;
}

/** How the run ended, before the VM is removed. */
type RunEnd =
  | { kind: 'stopped'; vm: VmView | null; error?: string }
  | { kind: 'signal'; signal: 'SIGINT' | 'SIGTERM' }
  | { kind: 'timeout' };

/** Registers `vm run` under `vm`. */
export function registerVmRun(vm: Command, run: CommandRunner): void {
  vm.command('run')
    .argument('<name>', 'VM name: lower-case letters, digits, ".", "_", "-"')
    .requiredOption(
      '-g, --guest <guest>',
      "a built-in guest, a local ELF file (sent to the vmm), or a name in the vmm's --guest-dir",
    )
    .option('-m, --memory <size>', 'RAM size with a binary unit (ram0 at 0x80000000)', '128M')
    .option('--shared', 'keep RAM in a memstore region (created for the VM, deleted with it)')
    .option('--vmm <id>', 'the vmm instance (default: the one with the fewest VMs)')
    .option(
      '--arg <key=value>',
      'argument for the guest, read through the control device (repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--timeout <duration>', 'destroy the VM and exit 124 if it runs longer (e.g. 30s, 2m)')
    .description(
      "run a guest to its end: create the VM, print its console, exit with the guest's exit " +
        'code, remove the VM',
    )
    .addHelpText(
      'after',
      '\nThe VM is created stopped, its console attached, then started, so no output is lost; the\n' +
        "guest's output goes to stdout until it powers off (everything it printed before, too).\n" +
        "Standard input goes to the guest's console until it ends (a pipe, a file, or a terminal in\n" +
        'its normal line mode: Ctrl-C stays a signal). Then the VM is removed and vmctl exits with\n' +
        "the guest's exit code (255 for codes above 255).\n" +
        "\nExit status: the guest's code; 124 after --timeout; 130 on Ctrl-C (SIGINT) and 143 on\n" +
        'SIGTERM (the VM is destroyed first); 1 when the guest crashed (the error on stderr) or a\n' +
        "request failed; 2 for a bad command line. With --output json the guest's output is not\n" +
        'streamed: one document {"run": {name, vmm, guest, state, exit-code, output}} at the end.\n' +
        '\nExamples:\n' +
        '  vmctl vm run hi --guest hello\n' +
        '  vmctl vm run t1 --guest ./build/test.elf --memory 64M --timeout 30s\n' +
        "  printf 'PING\\n' | vmctl vm run kv --guest kvserver --timeout 20s\n" +
        GUEST_HELP,
    )
    .action(
      run(async (ctx, name: string, opts: RunOptions) => {
        const timeoutMs =
          opts.timeout !== undefined ? parseDuration(opts.timeout, '--timeout') : undefined;
        const guest = resolveGuest(opts.guest);
        const created = await vms.create(
          ctx.clients,
          {
            name,
            guest: guest.name,
            guestImage: guest.image,
            memory: parseSize(opts.memory, '--memory'),
            backend: opts.shared === true ? 'shared' : 'private',
            region: '',
            args: parseArgs(opts.arg),
          },
          { ...(opts.vmm !== undefined ? { vmm: opts.vmm } : {}), start: false },
        );
        return runToEnd(ctx, created, timeoutMs);
      }),
    );
}

/** Attaches, starts, waits for the end, removes the VM; returns the exit status. */
async function runToEnd(
  ctx: CommandContext,
  created: VmView,
  timeoutMs: number | undefined,
): Promise<number> {
  const json = ctx.output === 'json';
  const output = new OutputSink(json);
  let session: ConsoleSession | undefined;
  let end: RunEnd;
  const stop = new Stopper(timeoutMs);
  try {
    session = vms.console(ctx.clients, created);
    session.onOutput((bytes) => output.write(bytes));
    const stopInput = forwardStdin(session);
    try {
      await vms.control(ctx.clients, 'start', created.name, created.vmm);
      end = await Promise.race([consoleEnd(ctx, created, session), stop.ended]);
    } finally {
      stopInput();
    }
  } catch (err) {
    stop.dispose();
    session?.close();
    await removeVm(ctx, created);
    throw err;
  }
  stop.dispose();
  if (end.kind !== 'stopped') session?.close();
  await output.flushed();
  const removed = await removeVm(ctx, created);
  return report(ctx, created, end, output, removed);
}

/** The end of a run whose console closed: what the vmm says of the VM now. */
async function consoleEnd(
  ctx: CommandContext,
  created: VmView,
  session: ConsoleSession,
): Promise<RunEnd> {
  let error: string | undefined;
  try {
    await session.closed;
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  const vm = await vms.on(ctx.clients, refOf(created), created.name).catch(() => null);
  return error !== undefined ? { kind: 'stopped', vm, error } : { kind: 'stopped', vm };
}

/** Prints how the run ended and picks the exit status. */
function report(
  ctx: CommandContext,
  created: VmView,
  end: RunEnd,
  output: OutputSink,
  removed: string | null,
): number {
  let code: number;
  let state = 'destroyed';
  let exitCode: number | null = null;
  if (end.kind === 'signal') {
    ctx.io.err(`vmctl: ${end.signal}: destroyed VM ${created.name}\n`);
    code = end.signal === 'SIGINT' ? RUN_EXIT.sigint : RUN_EXIT.sigterm;
  } else if (end.kind === 'timeout') {
    ctx.io.err(
      `vmctl: VM ${created.name} did not power off within --timeout; destroyed it (exit 124)\n`,
    );
    code = RUN_EXIT.timeout;
  } else if (end.vm?.state === 'powered-off') {
    state = 'powered-off';
    exitCode = end.vm.exitCode ?? 0;
    code = Math.min(exitCode, 255);
  } else {
    state = end.vm?.state ?? 'gone';
    const why =
      end.vm?.state === 'crashed'
        ? `the guest crashed: ${end.vm.error || 'the vCPU stopped'}`
        : end.vm !== null
          ? `its console closed while it was ${end.vm.state}`
          : `it is gone (${end.error ?? 'destroyed by someone else?'})`;
    ctx.io.err(`vmctl: VM ${created.name} on ${created.vmm}: ${why}\n`);
    code = EXIT.failed;
  }
  if (removed !== null) ctx.io.err(`vmctl: ${removed}\n`);
  if (ctx.output === 'json') {
    ctx.print(
      {
        run: {
          name: created.name,
          vmm: created.vmm,
          guest: created.guest,
          state,
          ...(exitCode !== null ? { 'exit-code': exitCode } : {}),
          ...(end.kind === 'stopped' && end.vm?.error ? { error: end.vm.error } : {}),
          output: output.text(),
          ...(output.truncated ? { 'output-truncated': true } : {}),
        },
      },
      () => '',
    );
  }
  return code;
}

function refOf(v: VmView): { id: string; address: string; alive: boolean } {
  return { id: v.vmm, address: v.vmmAddress, alive: true };
}

/** Destroys the run's VM; null when done (or already gone), else what went wrong. */
async function removeVm(ctx: CommandContext, v: VmView): Promise<string | null> {
  try {
    await vms.destroy(ctx.clients, v.name, v.vmm);
    return null;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (/VMM_VM_NOT_FOUND|no VM named/.test(message)) return null;
    return `could not remove VM ${v.name} on ${v.vmm} (${message}); remove it with \`vmctl vm destroy ${v.name}\``;
  }
}

/** SIGINT, SIGTERM and the time limit, as one promise of the run's end. */
class Stopper {
  readonly ended: Promise<RunEnd>;
  private readonly cleanups: (() => void)[] = [];

  constructor(timeoutMs: number | undefined) {
    this.ended = new Promise<RunEnd>((resolve) => {
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        const on = (): void => resolve({ kind: 'signal', signal });
        process.once(signal, on);
        this.cleanups.push(() => process.off(signal, on));
      }
      if (timeoutMs !== undefined) {
        const timer = setTimeout(() => resolve({ kind: 'timeout' }), timeoutMs);
        this.cleanups.push(() => clearTimeout(timer));
      }
    });
  }

  dispose(): void {
    for (const c of this.cleanups.splice(0)) c();
  }
}

/**
 * Sends stdin to the console until it ends (backpressure: stdin pauses while the stream is
 * full). Returns the function that stops reading (so vmctl can exit).
 */
function forwardStdin(session: ConsoleSession): () => void {
  const stdin = process.stdin;
  const onData = (chunk: Buffer): void => {
    if (!session.write(chunk)) stdin.pause();
  };
  session.onDrain(() => stdin.resume());
  stdin.on('data', onData);
  stdin.once('error', () => stdin.off('data', onData));
  return () => {
    stdin.off('data', onData);
    stdin.pause();
    stdin.destroy();
  };
}

/** The guest's output: streamed to stdout, or (JSON) kept, the last {@link JSON_OUTPUT_LIMIT}. */
class OutputSink {
  private pending = 0;
  private idle: (() => void) | undefined;
  private kept: Buffer[] = [];
  private keptBytes = 0;
  truncated = false;

  constructor(private readonly keep: boolean) {}

  write(bytes: Uint8Array): void {
    if (this.keep) {
      this.kept.push(Buffer.from(bytes));
      this.keptBytes += bytes.length;
      while (this.keptBytes - this.kept[0]!.length >= JSON_OUTPUT_LIMIT) {
        this.keptBytes -= this.kept.shift()!.length;
        this.truncated = true;
      }
      return;
    }
    this.pending++;
    process.stdout.write(bytes, () => {
      this.pending--;
      if (this.pending === 0) this.idle?.();
    });
  }

  /** Resolves once everything written reached stdout's file. */
  flushed(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idle = resolve));
  }

  text(): string {
    return Buffer.concat(this.kept).toString('utf8');
  }
}
