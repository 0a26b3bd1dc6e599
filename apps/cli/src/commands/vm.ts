import { Option, type Command } from 'commander';
import { resolveGuest } from '../api/guest-image.js';
import { vms, vmJson, type ConsoleSession, type VmView } from '../api/vms.js';
import type { CommandContext } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { renderFields, renderTable } from '../output/render.js';
import { formatBytes, parseSize } from '../output/units.js';
import { GUEST_HELP, parseArgs } from './guest-args.js';
import type { CommandRunner } from './runner.js';
import { registerVmRun } from './vm-run.js';

export { parseArgs };

/** The byte that detaches an interactive console: Ctrl-] (telnet, virsh). */
const DETACH = 0x1d;

function memoryOf(v: VmView): bigint {
  return v.ram.reduce((sum, b) => sum + b.size, 0n);
}

function stateText(v: VmView): string {
  if (v.state === 'powered-off') return `powered-off (${v.exitCode ?? 0})`;
  if (v.postcopy !== null) {
    return `${v.state} (${v.postcopy.sourcePaused ? 'postcopy-paused' : 'post-copy'})`;
  }
  return v.state;
}

function compact(n: bigint): string {
  const x = Number(n);
  if (x < 1e4) return String(x);
  for (const [unit, div] of [
    ['T', 1e12],
    ['G', 1e9],
    ['M', 1e6],
    ['k', 1e3],
  ] as const) {
    if (x >= div) return `${(x / div).toFixed(x / div < 100 ? 2 : 1)}${unit}`;
  }
  return String(x);
}

function renderList(list: VmView[]): string {
  return renderTable(
    ['NAME', 'VMM', 'STATE', 'MEMORY', 'INSTRET', 'MIPS'],
    list.map((v) => [
      v.name,
      v.vmm,
      stateText(v),
      formatBytes(memoryOf(v)),
      compact(v.instret),
      v.state === 'running' ? v.mips.toFixed(1) : '-',
    ]),
  );
}

function renderOne(v: VmView): string {
  const fields: [string, string][] = [
    ['name', v.name],
    ['vmm', `${v.vmm} (${v.vmmAddress})`],
    ['state', stateText(v)],
  ];
  if (v.error !== '') fields.push(['error', v.error]);
  fields.push(
    ['guest', v.guest],
    ['instret', `${v.instret}`],
    ['mips', v.state === 'running' ? v.mips.toFixed(1) : '-'],
    ['ready', v.ready ? 'yes (the guest rang READY)' : 'no'],
    ['generation', v.generationId.toString(16).padStart(16, '0')],
    ['created', v.createdAt ?? '-'],
    ['memory', formatBytes(memoryOf(v))],
  );
  if (v.memory !== null) {
    fields.push([
      'memory use',
      `PSS ${formatBytes(v.memory.pssBytes)}, private dirty ` +
        `${formatBytes(v.memory.privateDirtyBytes)}, RSS ${formatBytes(v.memory.rssBytes)}`,
    ]);
  }
  if (v.snapshot !== '') fields.push(['snapshot', `${v.snapshot} (restored or cloned from it)`]);
  if (v.postcopy !== null) fields.push(['post-copy', postcopyLine(v.name, v.postcopy)]);
  const args = Object.entries(v.args);
  if (args.length > 0) fields.push(['args', args.map(([k, x]) => `${k}=${x}`).join(' ')]);
  for (const b of v.ram) {
    const where = b.region !== '' ? `, region ${b.region}` : '';
    const lease =
      b.regionRef !== null && b.backend === 'shared' ? `, lease epoch ${b.regionRef.epoch}` : '';
    fields.push([
      `ram ${b.id}`,
      `0x${b.guestBase.toString(16)} ${formatBytes(b.size)} ${b.backend}${where}${lease}; ` +
        `${b.touchedPages} page(s) touched, ${b.dirtyPages} dirty`,
    ]);
  }
  return renderFields(fields);
}

/** Where a post-copy stands, for people: what is here, and what the guest waits for. */
function postcopyLine(name: string, p: NonNullable<VmView['postcopy']>): string {
  const pct = p.totalPages > 0n ? Number((p.presentPages * 1000n) / p.totalPages) / 10 : 0;
  const here = `${p.presentPages}/${p.totalPages} pages here (${pct}%)`;
  const wait = p.waiting ? `; the guest waits for page ${p.pageWaited}` : '';
  const paused = p.sourcePaused
    ? `; postcopy-paused: the source stopped answering, resume with \`vmctl migrate ${name} --recover\``
    : '';
  return `${here}${wait}${paused}; ${p.pagesWaited} page(s) waited for (p50 ${p.faultP50Us} µs, p99 ${p.faultP99Us} µs)`;
}

function milliseconds(text: string, flag: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new CliError('CLI_USAGE', `${flag} ${text} is not a number of milliseconds`);
  }
  return n;
}

const vmmOption = () =>
  new Option('--vmm <id>', 'the vmm instance (default: whichever holds the VM)');

/** `vmctl vm ...`: create, run, list, show, start, pause, resume, destroy, console. */
export function registerVm(program: Command, run: CommandRunner): void {
  const vm = program
    .command('vm')
    .description(
      "virtual machines on the cluster's vmm instances (names are unique in the cluster)",
    );

  vm.command('create')
    .argument('<name>', 'VM name: lower-case letters, digits, ".", "_", "-"')
    .requiredOption(
      '-g, --guest <guest>',
      'a built-in guest (hello, ab, kvserver, bench, conformance/<test>), a local RV32 ELF file ' +
        "(sent to the vmm), or the name of an ELF in the vmm's --guest-dir",
    )
    .option('-m, --memory <size>', 'RAM size with a binary unit (ram0 at 0x80000000)', '128M')
    .option('--shared', 'keep RAM in a memstore region (created for the VM, deleted with it)')
    .option('--region <region>', 'keep RAM in this existing memstore region (implies --shared)')
    .option('--template <template>', 'map a sealed template copy-on-write (a clone)')
    .addOption(vmmOption())
    .option('--no-start', 'create it without starting it (start later with `vm start`)')
    .option(
      '--arg <key=value>',
      'argument for the guest, read through the control device (repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .description('create a VM on a vmm instance (the least loaded one unless --vmm) and start it')
    .addHelpText('after', GUEST_HELP)
    .action(
      run(
        async (
          ctx,
          name: string,
          opts: {
            guest: string;
            memory: string;
            shared?: boolean;
            region?: string;
            template?: string;
            vmm?: string;
            start: boolean;
            arg: string[];
          },
        ) => {
          if (opts.template !== undefined && (opts.shared === true || opts.region !== undefined)) {
            throw new CliError('CLI_USAGE', '--template cannot be combined with --shared/--region');
          }
          const backend =
            opts.template !== undefined
              ? 'clone'
              : opts.shared === true || opts.region !== undefined
                ? 'shared'
                : 'private';
          const guest = resolveGuest(opts.guest);
          const v = await vms.create(
            ctx.clients,
            {
              name,
              guest: guest.name,
              guestImage: guest.image,
              memory: parseSize(opts.memory, '--memory'),
              backend,
              region: opts.template ?? opts.region ?? '',
              args: parseArgs(opts.arg),
            },
            { ...(opts.vmm !== undefined ? { vmm: opts.vmm } : {}), start: opts.start },
          );
          ctx.print(
            { vm: vmJson(v) },
            () =>
              `created VM ${v.name} on ${v.vmm} (${formatBytes(memoryOf(v))} ${backend}): ${stateText(v)}\n`,
          );
        },
      ),
    );

  registerVmRun(vm, run);

  vm.command('list')
    .alias('ls')
    .description('list the VMs of every vmm instance')
    .action(
      run(async (ctx) => {
        const { vms: list, unreachable } = await vms.list(ctx.clients);
        for (const u of unreachable) ctx.io.err(`vmctl: ${u.vmm} did not answer: ${u.error}\n`);
        ctx.print({ vms: list.map(vmJson), unreachable }, () => renderList(list));
        return unreachable.length > 0 ? EXIT.failed : EXIT.ok;
      }),
    );

  vm.command('show')
    .argument('<name>', 'VM name')
    .addOption(vmmOption())
    .description(
      'show one VM: state, exit code, instructions, MIPS, RAM blocks, what its RAM costs (PSS, ' +
        'private dirty, RSS) and the snapshot it came from',
    )
    .action(
      run(async (ctx, name: string, opts: { vmm?: string }) => {
        const v = await vms.find(ctx.clients, name, opts.vmm, true);
        ctx.print({ vm: vmJson(v) }, () => renderOne(v));
      }),
    );

  for (const [action, past, what] of [
    ['start', 'started', 'run a VM created with --no-start'],
    ['pause', 'paused', "stop a VM's vCPU at an instruction boundary"],
    ['resume', 'resumed', 'let a paused VM run again'],
  ] as const) {
    vm.command(action)
      .argument('<name>', 'VM name')
      .addOption(vmmOption())
      .description(what)
      .action(
        run(async (ctx, name: string, opts: { vmm?: string }) => {
          const v = await vms.control(ctx.clients, action, name, opts.vmm);
          ctx.print({ vm: vmJson(v) }, () => `${past} VM ${v.name} on ${v.vmm}: ${stateText(v)}\n`);
        }),
      );
  }

  vm.command('destroy')
    .alias('rm')
    .argument('<name>', 'VM name')
    .addOption(vmmOption())
    .description('stop a VM and free its RAM (a region created for it is deleted)')
    .action(
      run(async (ctx, name: string, opts: { vmm?: string }) => {
        const v = await vms.destroy(ctx.clients, name, opts.vmm);
        ctx.print(
          { destroyed: { name: v.name, vmm: v.vmm } },
          () => `destroyed VM ${v.name} on ${v.vmm}\n`,
        );
      }),
    );

  vm.command('console')
    .argument('<name>', 'VM name')
    .addOption(vmmOption())
    .option(
      '--drain-ms <ms>',
      'piped input: after input ends and the guest answered, leave once it was silent this long',
      '500',
    )
    .option(
      '--wait-ms <ms>',
      'piped input: leave this long after input ended at the latest',
      '10000',
    )
    .description("attach the terminal to a VM's serial console")
    .addHelpText(
      'after',
      '\nOn a terminal the console is raw: every key goes to the guest; detach with Ctrl-] (the\n' +
        'VM keeps running). With standard input not a terminal, input is piped to the guest and\n' +
        'its output to standard output; once input ended, vmctl exits when the guest answered and\n' +
        'then was silent for --drain-ms (at the latest after --wait-ms), or when the VM powers off.\n' +
        'The last 64 KiB of output are replayed first.',
    )
    .action(
      run(async (ctx, name: string, opts: { vmm?: string; drainMs: string; waitMs: string }) => {
        const drainMs = milliseconds(opts.drainMs, '--drain-ms');
        const waitMs = milliseconds(opts.waitMs, '--wait-ms');
        const v = await vms.find(ctx.clients, name, opts.vmm);
        const session = vms.console(ctx.clients, v);
        if (process.stdin.isTTY === true) return attachTerminal(ctx, v, session);
        return pipeConsole(session, drainMs, waitMs);
      }),
    );
}

/** Interactive console: raw terminal, Ctrl-] detaches. */
async function attachTerminal(
  ctx: CommandContext,
  v: VmView,
  session: ConsoleSession,
): Promise<number> {
  const stdin = process.stdin;
  ctx.io.err(`Connected to VM ${v.name} on ${v.vmm}. Detach with Ctrl-].\r\n`);
  session.onOutput((bytes) => process.stdout.write(bytes));
  let detached = false;
  const done = new Promise<void>((resolve) => {
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', (chunk: Buffer) => {
      const at = chunk.indexOf(DETACH);
      if (at < 0) {
        session.write(chunk);
        return;
      }
      if (at > 0) session.write(chunk.subarray(0, at));
      detached = true;
      session.close();
      resolve();
    });
    session.closed.then(
      () => resolve(),
      () => resolve(),
    );
  });
  try {
    await done;
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
  if (detached) {
    ctx.io.err(`\r\nDetached from VM ${v.name} (the VM is left as it is).\r\n`);
    return EXIT.ok;
  }
  await session.closed; // a refusal (e.g. the VM was destroyed) surfaces as the command's error
  // Say what the vmm reports now rather than assume why the console ended.
  const now = await vms
    .on(ctx.clients, { id: v.vmm, address: v.vmmAddress, alive: true }, v.name)
    .catch(() => null);
  const state =
    now === null ? 'gone' : now.error !== '' ? `${stateText(now)}: ${now.error}` : stateText(now);
  ctx.io.err(`\r\nThe console of VM ${v.name} closed; the VM is ${state}.\r\n`);
  return EXIT.ok;
}

/**
 * Piped console: stdin to the guest, guest output to stdout. Once stdin ended, vmctl leaves when
 * the guest answered (output arrived after the last input) and then stayed silent for
 * `drainMs`, or `waitMs` after the end of input at the latest, or when the VM stops.
 */
async function pipeConsole(
  session: ConsoleSession,
  drainMs: number,
  waitMs: number,
): Promise<number> {
  const stdin = process.stdin;
  let lastOutput = -Infinity;
  let lastInput = -Infinity;
  let pendingWrites = 0;
  session.onOutput((bytes) => {
    lastOutput = performance.now();
    pendingWrites++;
    process.stdout.write(bytes, () => pendingWrites--);
  });
  session.onDrain(() => stdin.resume());
  const inputEnded = new Promise<void>((resolve) => {
    stdin.on('data', (chunk: Buffer) => {
      lastInput = performance.now();
      if (!session.write(chunk)) stdin.pause();
    });
    stdin.once('end', () => resolve());
    stdin.once('error', () => resolve());
  });
  let closed = false;
  const streamDone = session.closed.finally(() => {
    closed = true;
  });
  await Promise.race([inputEnded, streamDone.catch(() => undefined)]);
  const ended = performance.now();
  const settled = (): boolean => {
    const now = performance.now();
    if (now - ended >= waitMs) return true;
    const answered = lastOutput >= lastInput;
    return answered && now - Math.max(lastOutput, ended) >= drainMs;
  };
  while (!closed && !settled()) {
    await Promise.race([new Promise((r) => setTimeout(r, 20)), streamDone.catch(() => undefined)]);
  }
  if (!closed) session.close();
  stdin.pause();
  stdin.destroy();
  await streamDone;
  while (pendingWrites > 0) await new Promise((r) => setTimeout(r, 5));
  return EXIT.ok;
}
